"""Slides, tissue masks, tiling, the synthetic demo cohort, features and cohorts."""
