#!/usr/bin/env python3
"""Push COUNT distinct small images to a registry cheaply, for list benchmarks.

Helper of benches/pull_vs_containerd.sh (ListImages of 10,000 images). Every
image is an OCI image manifest with one shared layer (a tiny gzip tar,
uploaded once) and its own config (a label carries its index), so each one
has a distinct image id (its config digest) while the registry stores and the
daemon pulls one layer in all. Images are pushed straight through the
registry's HTTP API (POST + PUT per config, PUT per manifest) by a few
threads with keep-alive connections, which takes seconds where one
`skopeo copy` per image would take many minutes.

Python 3 stdlib only; plain http, for a loopback registry.

Usage:
  push_synthetic_images.py --registry 127.0.0.1:5000 [--repository bench/many-images]
                           [--count 10000] [--workers 4] [--references-out FILE]
Prints one JSON line (count, seconds); FILE receives the references, one a line.
"""
import argparse
import gzip
import hashlib
import http.client
import io
import json
import sys
import tarfile
import threading
import time
import urllib.parse

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MTIME = 1767225600  # 2026-01-01T00:00:00Z, as make_images.py, for reproducible digests


def shared_layer():
    """(gzip bytes, diff id) of a one-file tar layer, byte-for-byte reproducible."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = b"shared by every synthetic image\n"
        info = tarfile.TarInfo("etc/synthetic")
        info.size, info.mtime, info.mode = len(data), MTIME, 0o644
        tar.addfile(info, io.BytesIO(data))
    uncompressed = buffer.getvalue()
    return (gzip.compress(uncompressed, compresslevel=6, mtime=0),
            "sha256:" + hashlib.sha256(uncompressed).hexdigest())


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    """One keep-alive connection to the registry (one per thread)."""

    def __init__(self, host, repository):
        self.host = host
        self.repository = repository
        self.connection = http.client.HTTPConnection(host, timeout=60)

    def request(self, method, path, body=None, headers=None, expect=(200, 201, 202)):
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        payload = response.read()
        if response.status not in expect:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {payload[:300]!r}")
        return response

    def blob_exists(self, digest):
        response = self.request("HEAD", f"/v2/{self.repository}/blobs/{digest}",
                                expect=(200, 404))
        return response.status == 200

    def put_blob(self, data):
        digest = digest_of(data)
        response = self.request("POST", f"/v2/{self.repository}/blobs/uploads/",
                                headers={"Content-Length": "0"})
        location = urllib.parse.urlsplit(response.getheader("Location"))
        query = location.query + ("&" if location.query else "") + \
            urllib.parse.urlencode({"digest": digest})
        self.request("PUT", f"{location.path}?{query}", body=data,
                     headers={"Content-Type": "application/octet-stream",
                              "Content-Length": str(len(data))})
        return {"mediaType": None, "digest": digest, "size": len(data)}

    def put_manifest(self, tag, data):
        self.request("PUT", f"/v2/{self.repository}/manifests/{tag}", body=data,
                     headers={"Content-Type": MT_MANIFEST, "Content-Length": str(len(data))})


def encode(document):
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", required=True, help="HOST:PORT, plain http")
    parser.add_argument("--repository", default="bench/many-images")
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--references-out")
    arguments = parser.parse_args()

    started = time.monotonic()
    layer, diff_id = shared_layer()
    first = Registry(arguments.registry, arguments.repository)
    layer_descriptor = {"mediaType": MT_LAYER_GZ, "digest": digest_of(layer), "size": len(layer)}
    if not first.blob_exists(layer_descriptor["digest"]):
        first.put_blob(layer)

    def tag_of(index):
        return f"i{index:05d}"

    def push_range(indexes, errors):
        registry = Registry(arguments.registry, arguments.repository)
        try:
            for index in indexes:
                config = encode({
                    "created": "2026-01-01T00:00:00Z",
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {"User": "1000:1000", "Cmd": ["/bin/sh"],
                               "Labels": {"bench.synthetic.index": str(index)}},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                })
                config_descriptor = registry.put_blob(config)
                config_descriptor["mediaType"] = MT_CONFIG
                manifest = encode({"schemaVersion": 2, "mediaType": MT_MANIFEST,
                                   "config": config_descriptor, "layers": [layer_descriptor]})
                registry.put_manifest(tag_of(index), manifest)
        except Exception as error:  # reported by the main thread
            errors.append(error)

    errors = []
    workers = [threading.Thread(target=push_range,
                                args=(range(w, arguments.count, arguments.workers), errors))
               for w in range(max(1, arguments.workers))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        print(f"push_synthetic_images: {errors[0]}", file=sys.stderr)
        return 1
    if arguments.references_out:
        with open(arguments.references_out, "w") as out:
            for index in range(arguments.count):
                out.write(f"{arguments.registry}/{arguments.repository}:{tag_of(index)}\n")
    print(json.dumps({"count": arguments.count, "repository": arguments.repository,
                      "seconds": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
