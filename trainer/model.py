"""The classifier: a compact 1-D CNN from a normalized 12-lead ECG to P(abnormal).

Small on purpose: it must train on a 2-core CPU in minutes. Strided convolutions shrink the 5000
samples quickly (each block halves the length), batch norm keeps the deep-ish stack trainable at a
high learning rate, and global average + max pooling make the decision independent of where in
the 10 s a finding occurs.
"""
from __future__ import annotations

import keras

from ecg_common.schema import ECG_KEY, ECG_SHAPE
from trainer.config import DEFAULT_FILTERS


def _conv_block(x, filters: int, kernel_size: int, strides: int, name: str):
    """Conv (no bias: batch norm has one) -> batch norm -> ReLU."""
    x = keras.layers.Conv1D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


@keras.saving.register_keras_serializable(package="ecg_trainer")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Multi-label loss: per-class binary cross-entropy, the positives of class k weighted by
    `positive_weights[k]` (n_neg / n_pos on the training records), averaged over the classes."""

    def __init__(self, positive_weights, name: str = "weighted_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(w) for w in positive_weights]

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        y_pred = keras.ops.clip(y_pred, keras.config.epsilon(), 1.0 - keras.config.epsilon())
        weights = keras.ops.convert_to_tensor(self.positive_weights, dtype=y_pred.dtype)
        per_class = -(weights * y_true * keras.ops.log(y_pred) + (1.0 - y_true) * keras.ops.log(1.0 - y_pred))
        return keras.ops.mean(per_class, axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "positive_weights": self.positive_weights}


def build_model(filters: tuple[int, ...] = DEFAULT_FILTERS, kernel_size: int = 7, dropout: float = 0.3,
                learning_rate: float = 1e-3, num_classes: int | None = None,
                positive_weights: list[float] | None = None, input_shape: tuple[int, int] = ECG_SHAPE) -> keras.Model:
    """A compiled Keras 3 model: input `ecg` [batch, *input_shape] (normalized; default [batch, 5000, 12],
    the trainer passes the shape its data's schema declares), output [batch, 1] sigmoid.

    Every block is a stride-2 convolution, so len(filters) blocks divide the length by 2**len(filters)
    (6 blocks: 5000 -> 79 steps, a receptive field of about a second, enough for one beat).
    Metrics are named so that callbacks can monitor `val_auc`.

    With `num_classes` (multi-label data) the output is [batch, K] sigmoids, the loss
    `WeightedBinaryCrossentropy(positive_weights)` (plain cross-entropy without weights) and `auc` the
    macro average of the K per-class AUCs.
    """
    inputs = keras.Input(shape=tuple(input_shape), name=ECG_KEY)
    x = inputs
    for index, width in enumerate(filters):
        x = _conv_block(x, width, kernel_size, strides=2, name=f"block{index + 1}")
    x = keras.layers.Concatenate(name="pool")([
        keras.layers.GlobalAveragePooling1D(name="avg_pool")(x),
        keras.layers.GlobalMaxPooling1D(name="max_pool")(x),
    ])
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    if num_classes is not None:
        outputs = keras.layers.Dense(num_classes, activation="sigmoid", name="classes")(x)
        model = keras.Model(inputs, outputs, name="ecg_cnn_multilabel")
        model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                      loss=(WeightedBinaryCrossentropy(positive_weights) if positive_weights is not None
                            else keras.losses.BinaryCrossentropy()),
                      metrics=[keras.metrics.AUC(name="auc", multi_label=True, num_labels=num_classes),
                               keras.metrics.BinaryAccuracy(name="accuracy")])
        return model
    outputs = keras.layers.Dense(1, activation="sigmoid", name="abnormal")(x)
    model = keras.Model(inputs, outputs, name="ecg_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model
