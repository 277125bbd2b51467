"""The ablation: the pruned student trained without distillation (and without single loss terms), same budget."""
