"""Built-in components, each module an ordinary plugin registered through the hooks."""
