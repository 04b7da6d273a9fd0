"""The only layer that joins envs with policies and algorithms, in three rooms: ``training`` (the loops of one
process and the job), ``distributed`` (actors, learner, weight versions, the local and Ray backends) and
``robot`` (the env bridge, the policy server, bag import)."""
