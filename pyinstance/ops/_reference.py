"""Plain torch implementations of every op: the test oracle, never a silent fallback."""
