"""Decoding one ECG file into a (samples, leads) float32 array in mV: MATLAB containers, WFDB headers,
standardization and signal-quality flags. Plain numpy/scipy/h5py: no Beam, no TensorFlow."""
