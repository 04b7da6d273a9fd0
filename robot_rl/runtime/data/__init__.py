"""Data in and out of episode stores: LeRobot datasets, robomimic HDF5, bags of any arm, and the rerun viewer."""
