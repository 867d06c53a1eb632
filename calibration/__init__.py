"""vp.calibration."""
