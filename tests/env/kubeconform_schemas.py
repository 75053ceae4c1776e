"""Lays out the Kubernetes JSON schemas that the PyPI package kubernetes-validate ships so that
kubeconform can read them offline: `<out>/<version>-standalone-strict/<kind>[-<group>]-<version>.json`.

Usage: kubeconform_schemas.py v1.36.3 OUT_DIR

kubernetes-validate refers to shared definitions as `/api/_definitions.json#/$defs/...`; kubeconform
resolves `$ref`s against the schema file, so they are rewritten to the absolute file URL of the
local copy. Any `$id` is dropped so the file URL is the schema's identity.
"""
import json
import os
import pathlib
import sys

import kubernetes_validate


def main() -> None:
    version, out = sys.argv[1], pathlib.Path(sys.argv[2])
    major_minor = ".".join(version.lstrip("v").split(".")[:2])
    src = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{major_minor}.0-local-strict"
    if not src.is_dir():
        sys.exit(f"kubernetes-validate ships no schemas for Kubernetes {major_minor} (looked in {src})")
    dest = out / f"{version}-standalone-strict"
    dest.mkdir(parents=True, exist_ok=True)
    definitions = (dest / "_definitions.json").resolve()
    prefix = "/api/_definitions.json#"
    replacement = definitions.as_uri() + "#"
    count = 0
    for f in sorted(src.glob("*.json")):
        text = f.read_text()
        text = text.replace(f'"{prefix}', f'"{replacement}')
        doc = json.loads(text)
        if isinstance(doc, dict):
            doc.pop("$id", None)
            doc.pop("id", None)
        (dest / f.name).write_text(json.dumps(doc))
        count += 1
    print(f"wrote {count} schemas to {dest}", file=sys.stderr)


if __name__ == "__main__":
    main()
