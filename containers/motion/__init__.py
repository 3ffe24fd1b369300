"""Motion estimation stages (peaks, locations, motion, cleaning) and the motion summary figure."""
