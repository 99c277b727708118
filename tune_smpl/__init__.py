"""tune-smpl: the command line and the sweep builder (Ray Tune + Optuna + ASHA + MLflow)."""
