"""Decoding ECG files, shared by the pipeline and the trainer (which scores raw recordings): one file
-> a (samples, leads) float32 array in mV (`decoding/`, plain numpy/scipy/h5py), run inside a
resource-limited child process (`sandbox/`), opening local files safely (`opening.py`) within the read
limits (`file_limits.py`). Depends only on `ecg_common`; no Beam, no TensorFlow."""
