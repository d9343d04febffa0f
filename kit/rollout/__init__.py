"""Online updates: the rollout plan and its two-step apply, the all-replica agreement wait, the
check a version passes before it is published, and the tasks' logic. Where a step goes (local
replicas, a cluster) is a Target (target.py); this package imports no target but its own local one."""
