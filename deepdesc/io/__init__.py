"""Layer 5, interop files: hloc-layout HDF5, COLMAP databases, MATLAB .mat files.

Import the submodule you need (``deepdesc.io.h5``, ``deepdesc.io.colmap``, ``deepdesc.io.matlab``):
each has its own optional dependency (h5py, pycolmap, scipy), so nothing is imported here.
``deepdesc.io.journal`` (standard library only) is the rollback journal under ``h5``'s writes.
"""
