"""GFLOPs (2 x MACs of conv / matmul ops) of an exported .tflite by part of the graph."""
import collections, sys
from keras_solo import export

data = open(sys.argv[1], "rb").read()
graph = export.tflite_graph(data)
parts = collections.Counter()
for op in graph["ops"]:
    flops = export.tflite_flops({"ops": [op], "tensors": graph["tensors"]})
    if not flops:
        continue
    name = graph["tensors"][op["outputs"][0]]["name"]
    if not name.startswith("network/"):
        part = "decode (gathered masks, Matrix NMS)"
    elif "backbone" in name:
        part = "backbone"
    elif "fpn" in name:
        part = "fpn"
    elif "mask_conv" in name:
        part = "head mask tower"
    elif "cate" in name:
        part = "head category tower"
    elif "attention" in name:
        part = "attention projection"
    else:
        part = "other: " + name.split("/")[2]
    parts[part] += flops
total = sum(parts.values())
for part, flops in parts.most_common():
    print(f"{part:40s} {flops / 1e9:7.3f} GFLOPs  {100 * flops / total:5.1f} %")
print(f"{'total':40s} {total / 1e9:7.3f} GFLOPs")
