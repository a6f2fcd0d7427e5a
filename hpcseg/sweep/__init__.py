"""Hyperparameter sweeps as array jobs: the ``sweep:`` section (spec), its expansion into the task table
(expand), the Optuna worker that loops over trials in one process (worker), and what users read
(leaderboard). Nothing here imports torch; optuna is imported only by the worker and by collect."""
