"""The reference runner shipped in every bundle as ``run.py`` (plain text: it runs without the service)."""

RUNNER = r'''#!/usr/bin/env python3
"""Reference runner for this bundle: reads JSON rows and prints one JSON prediction per row.

    python run.py rows.jsonl        # or: python run.py < rows.jsonl

A row is an object of named features ({"f0": 5.1, ...}), {"features": [...]} or a plain list, one per
line, or all of them in one JSON list. Needs numpy and the runtime named in README.md.
"""

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SCHEMA = json.loads((HERE / "schema.json").read_text())
FORMAT = SCHEMA["format"]
TASK = SCHEMA.get("task") or "other"
CLASSES = SCHEMA.get("classes")


def read_rows(text):
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def vector(row):
    if isinstance(row, dict) and isinstance(row.get("features"), list):
        return row["features"]
    if isinstance(row, dict):
        names = SCHEMA.get("features")
        if not names:
            sys.exit("schema.json names no features: send each row as a list")
        return [row[name] for name in names]
    return row


def load_onnx():
    import onnxruntime

    session = onnxruntime.InferenceSession(str(HERE / "model.onnx"), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    dtype = {"tensor(double)": np.float64, "tensor(int64)": np.int64}.get(first.type, np.float32)

    def forward(batch):
        outputs = session.run(None, {first.name: batch.astype(dtype)})
        if TASK == "classification":  # the class probabilities: the 2-D float output
            for output in outputs:
                array = np.asarray(output)
                if array.ndim == 2 and array.dtype.kind == "f":
                    return array
        return np.asarray(outputs[-1] if TASK == "classification" else outputs[0])

    return forward


def load_torchscript():
    import torch

    module = torch.jit.load(str(HERE / "model.pt"), map_location="cpu").eval()

    def forward(batch):
        with torch.inference_mode():
            output = module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        while isinstance(output, (list, tuple, dict)):
            output = next(iter(output.values())) if isinstance(output, dict) else output[0]
        return output.float().numpy()

    return forward


def load_tflite():
    try:
        from ai_edge_litert.interpreter import Interpreter  # the standalone LiteRT runtime
    except ImportError:
        import tensorflow  # TensorFlow's own interpreter

        Interpreter = tensorflow.lite.Interpreter
    print(f"tflite interpreter: {Interpreter.__module__}", file=sys.stderr)
    interpreter = Interpreter(model_path=str(HERE / "model.tflite"))
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]

    def forward(batch):
        interpreter.resize_tensor_input(source["index"], batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source["index"], batch.astype(source["dtype"]))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(target["index"]))

    return forward


def probabilities(scores):
    """Rows that sum to 1 are probabilities already; one column is a binary logit; else softmax."""
    scores = scores.reshape(len(scores), -1).astype(np.float64)
    if scores.shape[1] == 1:
        column = scores[:, 0]
        inside = FORMAT != "torchscript" and bool(((column >= 0) & (column <= 1)).all())
        positive = column if inside else 1.0 / (1.0 + np.exp(-column))
        return np.column_stack([1.0 - positive, positive])
    if (scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4):
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def main():
    text = Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else sys.stdin.read()
    rows = read_rows(text)
    batch = np.asarray([vector(row) for row in rows], dtype=np.float64)
    forward = {"onnx": load_onnx, "torchscript": load_torchscript, "tflite": load_tflite}[FORMAT]()
    output = forward(batch)
    for i in range(len(rows)):
        if TASK == "classification":
            p = probabilities(output)[i]
            best = int(np.argmax(p))
            label = CLASSES[best] if CLASSES and best < len(CLASSES) else best
            names = CLASSES if CLASSES and len(CLASSES) == len(p) else list(range(len(p)))
            answer = {"prediction": label, "probabilities": {str(n): float(v) for n, v in zip(names, p)}}
        else:
            value = np.asarray(output[i]).ravel()
            answer = {"prediction": float(value[0]) if value.size == 1 else value.tolist()}
        print(json.dumps(answer))


if __name__ == "__main__":
    main()
'''
