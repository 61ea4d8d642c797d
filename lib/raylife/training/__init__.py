"""Training: the one epoch loop, the Ray Train worker, the Tune sweep, trial sizing and the watchdog."""
