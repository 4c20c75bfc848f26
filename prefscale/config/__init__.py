"""Recipe schema: one module per recipe section, every field described (`prefscale recipe schema`)."""
