#!/usr/bin/env python3
"""Validates every Kubernetes manifest under deploy/, offline, as strictly as the API server.

- Every `*.yaml`/`*.yml` file under the root (default: the repository's `deploy/`) is read,
  all of its documents; a file none of whose documents has `apiVersion` and `kind` is not a
  Kubernetes manifest and is skipped (said so on one line). Other files (TOML, systemd
  units, Markdown) are not looked at. A YAML error or a duplicate key is a failure, as it is
  for kubectl.
- Built-in kinds are validated with kubernetes-validate against the schemas it bundles for
  Kubernetes KUBERNETES_VERSION, strict: an unknown field is an error.
- Custom resources are validated with jsonschema against the `openAPIV3Schema` of the served
  version of their CRD in tests/kubernetes/crds/ (vendored from the upstream releases, see
  the README there), made strict the way the API server is: a field the schema does not
  declare is an error unless the schema says `x-kubernetes-preserve-unknown-fields`. Their
  `metadata` is checked against Kubernetes' ObjectMeta.
- A kind with neither is a failure: vendor its CRD.

Not checked (the API server or the operators' webhooks do it): CEL rules
(`x-kubernetes-validations`), `format`s, immutability, cross-object references (does the
Secret exist), and each project's admission webhook.

Prints one line per document, then a summary. Exits 1 if anything failed, 2 if the check
could not run (the tools are not the versions requirements.txt pins, a CRD is missing or
invalid).
"""

import argparse
import importlib.metadata
import re
import sys
from pathlib import Path


def fatal(message):
    """The check could not run: neither a pass nor a refusal."""
    print(f"validate.py: {message}", file=sys.stderr)
    sys.exit(2)


try:
    import jsonschema
    import kubernetes_validate.utils as kv
    import yaml
    from referencing import Registry, Resource
except ImportError as error:
    fatal(f"{error}; install the packages with: pip install -r tests/kubernetes/requirements.txt")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# The oldest Kubernetes the cluster stack supports (Knative Eventing 1.22 needs 1.34): a
# manifest valid here uses no field a supported cluster lacks.
KUBERNETES_VERSION = "1.34"


class Loader(yaml.SafeLoader):
    """YAML as the Kubernetes tools read it: a duplicate key is an error (kubectl refuses
    it), and a timestamp stays the string it was written as."""


def _mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, str) and key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        if isinstance(key, str):
            seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
Loader.add_constructor(
    "tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node)
)


def display(path):
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def dotted(parts):
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe(error, base=()):
    """One message per problem, naming the path (under `base`): an unexpected field is named
    itself."""
    parts = [*base, *error.absolute_path]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        declared = set(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        unknown = [
            key
            for key in error.instance
            if key not in declared and not any(re.search(p, key) for p in patterns)
        ]
        if unknown:
            return [f"{dotted([*parts, key])}: unknown field" for key in unknown]
    return [f"{dotted(parts) or '(document)'}: {error.message}"]


def check_pins():
    """The installed tools are those requirements.txt pins, or nothing is claimed."""
    wrong = []
    for line in (HERE / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, pinned = line.partition("==")
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong.append(f"{name} {installed or 'missing'} (pinned {pinned})")
    if wrong:
        fatal(
            "not the pinned tools: "
            + ", ".join(wrong)
            + f"\ninstall them with: pip install -r {display(HERE / 'requirements.txt')}"
        )


class Schemas:
    """The built-in schemas of one Kubernetes version and the vendored CRDs."""

    def __init__(self, crd_dir, version):
        self.version = version
        bundled = [v for v in kv.all_versions() if kv.major_minor(v) == version]
        if not bundled:
            fatal(f"kubernetes-validate bundles no schemas for Kubernetes {version}")
        folder = f"kubernetes-json-schema/v{bundled[-1]}-local-strict"
        object_meta = kv.schema_contents(f"{folder}/objectmeta-meta-v1.json", version)
        definitions = kv.schema_contents(f"{folder}/_definitions.json", version)
        registry = Resource.from_contents(definitions) @ (
            Resource.from_contents(object_meta) @ Registry()
        )
        self.object_meta = jsonschema.Draft202012Validator(object_meta, registry=registry)
        # (group, version, kind) -> (validator, where the CRD came from)
        self.custom = {}
        crd_files = sorted(p for p in crd_dir.rglob("*") if p.suffix in (".yaml", ".yml"))
        if not crd_files:
            fatal(f"no CRDs in {display(crd_dir)}")
        for path in crd_files:
            for index, doc in documents(path):
                where = f"{display(path)} document {index}"
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    fatal(f"{where} is not a CustomResourceDefinition")
                problems = self.builtin(doc)
                if problems:
                    fatal(f"{where} is not a valid CRD: {'; '.join(problems)}")
                spec = doc["spec"]
                for served in spec["versions"]:
                    if not served.get("served", False):
                        continue
                    schema = served.get("schema", {}).get("openAPIV3Schema")
                    if schema is None:
                        fatal(f"{where} has no openAPIV3Schema for {served['name']}")
                    key = (spec["group"], served["name"], spec["names"]["kind"])
                    root = strict(schema, junctor=False)
                    # The API server itself checks these three on every object.
                    properties = dict(root.get("properties", {}))
                    properties["apiVersion"] = {"type": "string", "enum": [f"{key[0]}/{key[1]}"]}
                    properties["kind"] = {"type": "string", "enum": [key[2]]}
                    # metadata is ObjectMeta (checked apart); what the CRD adds still holds.
                    own = schema.get("properties", {}).get("metadata")
                    properties["metadata"] = strict(own, junctor=True) if own else {"type": "object"}
                    root["properties"] = properties
                    validator = jsonschema.Draft4Validator(root)
                    self.custom[key] = (validator, display(path))

    def builtin(self, doc):
        """Problems with a built-in kind, None when kubernetes-validate has no schema for it."""
        try:
            kv.validate(doc, self.version, strict=True)
        except kv.SchemaNotFoundError:
            return None
        except kv.ValidationError as error:
            return describe(error)
        except Exception as error:  # a document kubernetes-validate cannot even read
            return [f"(document): cannot be validated: {error!r}"]
        return []

    def metadata(self, meta):
        problems = []
        for error in self.object_meta.iter_errors(meta):
            problems += describe(error, base=["metadata"])
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(name, str) or not name:
            problems.append("metadata.name: missing (kubectl apply needs a name)")
        elif len(name) > 253 or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name):
            problems.append(f"metadata.name: {name!r} is not a lowercase DNS name")
        return problems


def strict(schema, junctor):
    """The schema with `additionalProperties: false` wherever the API server would refuse an
    undeclared field, and OpenAPI's `nullable` and int-or-string in JSON Schema's words.
    Inside anyOf/allOf/oneOf/not nothing is closed: there, structural schemas only restate
    fields the enclosing schema declares."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [strict(s, junctor=True) for s in out[key]]
    if "not" in out:
        out["not"] = strict(out["not"], junctor=True)
    if isinstance(out.get("items"), dict):
        out["items"] = strict(out["items"], junctor)
    if "properties" in out:
        out["properties"] = {k: strict(v, junctor) for k, v in out["properties"].items()}
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(out["additionalProperties"], junctor)
    is_object = out.get("type") == "object" or "properties" in out
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        is_object
        and not junctor
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    return out


def documents(path):
    """(1-based index, document) for every non-empty document of a YAML file."""
    with open(path, encoding="utf-8") as f:
        loaded = list(yaml.load_all(f, Loader=Loader))
    return [(i, doc) for i, doc in enumerate(loaded, start=1) if doc is not None]


def is_object(doc):
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--root", type=Path, default=REPO / "deploy", help="directory to search (default: deploy/)"
    )
    parser.add_argument(
        "--crds",
        type=Path,
        default=HERE / "crds",
        help="vendored CRDs (default: tests/kubernetes/crds/)",
    )
    args = parser.parse_args()

    check_pins()
    if not args.root.is_dir():
        fatal(f"{args.root} is not a directory")
    schemas = Schemas(args.crds, KUBERNETES_VERSION)

    checked = failed = 0
    for path in sorted(
        p for p in args.root.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml")
    ):
        shown = display(path)
        try:
            docs = documents(path)
        except yaml.YAMLError as error:
            print(f"FAIL  {shown}: not valid YAML: {' '.join(str(error).split())}")
            failed += 1
            continue
        if not any(is_object(doc) for _, doc in docs):
            print(f"skip  {shown}: not a Kubernetes manifest (no document has apiVersion and kind)")
            continue
        for index, doc in docs:
            checked += 1
            where = f"{shown} document {index}"
            if not is_object(doc):
                print(f"FAIL  {where}: not a Kubernetes object (no apiVersion and kind)")
                failed += 1
                continue
            meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
            name = meta.get("name", "<no name>")
            named = (
                f"{doc['kind']} {meta['namespace']}/{name}"
                if meta.get("namespace")
                else f"{doc['kind']} {name}"
            )
            group, _, version = str(doc["apiVersion"]).rpartition("/")
            custom = schemas.custom.get((group, version, doc["kind"]))
            if custom is not None:
                validator, crd = custom
                problems = []
                for error in sorted(
                    validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]
                ):
                    problems += describe(error)
                problems += schemas.metadata(doc.get("metadata"))
                against = f"CRD {crd}"
            else:
                problems = schemas.builtin(doc)
                if problems is None:
                    print(
                        f"FAIL  {where}: {named}: no schema for {doc['apiVersion']} {doc['kind']}: "
                        f"not built into Kubernetes {KUBERNETES_VERSION} and no CRD in {display(args.crds)}"
                    )
                    failed += 1
                    continue
                if not meta.get("name"):
                    problems.append("metadata.name: missing (kubectl apply needs a name)")
                against = f"Kubernetes {KUBERNETES_VERSION}"
            if problems:
                failed += 1
                for problem in problems:
                    print(f"FAIL  {where}: {named}: {problem}")
            else:
                print(f"ok    {where}: {named} ({doc['apiVersion']}, against {against})")

    if checked == 0:
        print(f"FAIL  no Kubernetes manifests found under {display(args.root)}")
        return 1
    print(f"{checked} documents checked, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
