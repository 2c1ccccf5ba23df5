#!/usr/bin/env python3
"""Makes the single-layer variant of a full image for scripts/bench.sh.

NGC builds its full images with all of /opt/tritonserver (and what apt and pip
added) in one layer. This takes a full image in an OCI layout whose first
layers are min's, merges its own layers into one (whiteouts and opaque
directories applied among them; those aimed at min's files are kept), and
writes an OCI layout with min's layers plus that one layer, tagged `latest`.

    flatten.py MIN_LAYOUT FULL_LAYOUT OUT_LAYOUT
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile


def load(layout):
    index = json.load(open(os.path.join(layout, "index.json")))
    digest = index["manifests"][0]["digest"]
    manifest = json.load(open(blob(layout, digest)))
    config = json.load(open(blob(layout, manifest["config"]["digest"])))
    return manifest, config


def blob(layout, digest):
    return os.path.join(layout, "blobs", "sha256", digest.split(":")[1])


def within(path, parent):
    return path == parent or path.startswith(parent + "/")


def main(min_dir, full_dir, out_dir):
    min_manifest, _ = load(min_dir)
    full_manifest, full_config = load(full_dir)
    shared = len(min_manifest["layers"])
    own = full_manifest["layers"][shared:]

    # Pass 1: which member of which layer survives, and the whiteouts that
    # reach into min.
    survivors = {}  # path -> (layer index, member name)
    whiteouts = []  # (layer index, member name) kept for min's files
    opaques = set()
    for i, layer in enumerate(own):
        with tarfile.open(blob(full_dir, layer["digest"]), "r:gz") as tar:
            for member in tar:
                name = member.name.lstrip("./").rstrip("/")
                base = os.path.basename(name)
                parent = os.path.dirname(name)
                if base == ".wh..wh..opq":
                    for path in [p for p in survivors if within(p, parent) and p != parent]:
                        del survivors[path]
                    opaques.add(parent)
                    whiteouts.append((i, member.name))
                elif base.startswith(".wh."):
                    target = os.path.join(parent, base[4:])
                    hit = [p for p in survivors if within(p, target)]
                    for path in hit:
                        del survivors[path]
                    if not hit:
                        whiteouts.append((i, member.name))
                else:
                    survivors[name] = (i, member.name)
    keep = {(i, n) for (i, n) in survivors.values()} | set(whiteouts)

    # Pass 2: write them, in layer and archive order.
    os.makedirs(os.path.join(out_dir, "blobs", "sha256"), exist_ok=True)
    raw = os.path.join(out_dir, "layer.tar")
    with tarfile.open(raw, "w", format=tarfile.GNU_FORMAT) as out:
        for i, layer in enumerate(own):
            with tarfile.open(blob(full_dir, layer["digest"]), "r:gz") as tar:
                for member in tar:
                    if (i, member.name) in keep:
                        data = tar.extractfile(member) if member.isreg() else None
                        out.addfile(member, data)
    diff_id = "sha256:" + file_digest(raw)
    gz = raw + ".gz"
    with open(gz, "wb") as sink:
        subprocess.run(["pigz", "-6", "-n", "-c", raw], stdout=sink, check=True)
    os.remove(raw)
    layer_digest = "sha256:" + file_digest(gz)
    layer_size = os.path.getsize(gz)
    os.rename(gz, blob(out_dir, layer_digest))

    for layer in min_manifest["layers"]:
        target = blob(out_dir, layer["digest"])
        if not os.path.exists(target):
            shutil.copyfile(blob(min_dir, layer["digest"]), target)
    config = dict(full_config)
    config["rootfs"] = {
        "type": "layers",
        "diff_ids": full_config["rootfs"]["diff_ids"][:shared] + [diff_id],
    }
    history = [h for h in full_config.get("history", [])]
    kept, layers_seen = [], 0
    for entry in history:
        if entry.get("empty_layer"):
            kept.append(entry)
        elif layers_seen < shared:
            kept.append(entry)
            layers_seen += 1
    kept.append({"created_by": "flatten.py: full's own layers in one"})
    config["history"] = kept
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = write_blob(out_dir, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": min_manifest["layers"]
        + [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = write_blob(out_dir, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    json.dump(index, open(os.path.join(out_dir, "index.json"), "w"))
    json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(out_dir, "oci-layout"), "w"))


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_blob(out_dir, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with open(blob(out_dir, digest), "wb") as f:
        f.write(data)
    return digest


if __name__ == "__main__":
    main(*sys.argv[1:4])
