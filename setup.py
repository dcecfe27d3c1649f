"""Package for the ECG pipeline and trainer.

The same file serves `pip install -e .` on a laptop and `--setup_file ./setup.py` on Dataflow, where
Beam builds an sdist of it and installs it on every worker so they can import the DoFns and the
`preprocessing_fn` (the layout of Beam's juliaset example).
"""
import setuptools

# Verified together on Python 3.11 (see requirements/constraints.txt for the full, pinned set).
REQUIRED_PACKAGES = [
    "apache-beam[gcp]==2.77.0",
    "tensorflow==2.21.0",
    "tensorflow-transform==1.21.0",
    "tfx-bsl==1.21.0",
    "numpy==2.4.6",
    "scipy==1.17.1",
    "h5py==3.14.0",
    "isal==1.9.1",  # GZIP at 10-20x the speed of zlib (docs/performance.md)
    "matplotlib==3.11.2",  # the run and training reports (imported lazily, never on Beam workers)
]

setuptools.setup(
    name="ecg-beam-pipeline",
    version="0.1.0",
    description="12-lead ECG .mat files to per-lead-normalized TFRecords (Apache Beam + tf.Transform), "
    "and a Keras trainer on them.",
    python_requires=">=3.10,<3.13",
    install_requires=REQUIRED_PACKAGES,
    extras_require={"test": ["pytest==9.2.0", "hypothesis==6.170.17",
                             "wfdb==4.3.1"]},  # writes WFDB fixtures (wrsamp) for the reader's tests
    # The demo generator (`beam_pipeline.synthetic`) stays out of the package Beam installs on workers.
    packages=setuptools.find_packages(
        include=["ecg_common", "ecg_decode", "ecg_decode.*", "beam_pipeline", "beam_pipeline.*", "trainer", "trainer.*"],
        exclude=["beam_pipeline.synthetic"]),
)
