"""Figures: graph overlays, heatmaps over thumbnails, ROC, memory/size plots."""
