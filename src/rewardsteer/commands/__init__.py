"""The click commands of `rewardsteer` other than the group itself (rewardsteer.cli): each turns its options into
library calls (a steering run into a `rewardsteer.runs.RunSpec`) and prints what comes back."""
