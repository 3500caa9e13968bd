"""Human judgements of rollouts: Label Studio tasks and exports -> the rankings table, and what is
read from it without a model (Bradley-Terry preferences, the leaderboard, agreement); plus
simulated rollouts and annotators with a known truth."""
