"""Pictures of what the models look at."""

from pyinstance.viz.heatmap import render_region_heatmap as render_region_heatmap
