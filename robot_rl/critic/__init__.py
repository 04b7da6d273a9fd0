"""The VLAC-style progress critic: given two observations and a language goal, a progress delta and a done
signal; its pair / negative dataset builder, the dense reward it gives, and its metrics (VOC, done F1, AUROC
on a policy's own rollouts)."""
