"""ftlab.sweeps: Optuna search over recipes — arrives with the sweeps issue."""
