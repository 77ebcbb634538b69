#!/usr/bin/env node
// Offline schema check of Kubernetes objects, for `kubectl kustomize DIR |
// node tests/k8s/validate.mjs` (tests/integration/test_k8s.py runs it on
// every kustomization under k8s/).  No API server is needed: the schemas are
// the ones npm `kubernetes-models` compiles from Kubernetes' OpenAPI spec.
//
// Each YAML document is built with its kubernetes-models class (by apiVersion
// and kind) and validated: wrong types, missing required fields, bad enum
// values.  Those compiled validators accept unknown fields (the OpenAPI
// schemas say nothing about additionalProperties), and the package ships no
// JSON schema to compare keys with, so unknown fields are found another way:
// the validator runs on a proxy that records which property names it looks
// up in each object.  A compiled validator looks up every property its
// schema declares, so a key it never asked for is one the schema does not
// know (`readinessprobe` for `readinessProbe`).  Maps (labels, data,
// resources.limits) are walked key by key, which the proxy sees as an
// enumeration: every key of an enumerated object is accepted.  An object the
// validator never looked into (a free-form field) is not judged.
//
// Kinds kubernetes-models has no class for (CRDs) are checked against the
// small hand-written schemas in CRDS below, just as strictly, or reported as
// "unchecked kind".
//
// Output: one line per problem, `kind/name: path: message`; exit 1 if any,
// 2 if the input is not YAML.  VALIDATE_DEBUG=1 also lists on stderr the
// objects taken as maps or never looked into (see unknownFields).
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const problems = [];

function pathText(parts) {
  let s = "";
  for (const p of parts) {
    if (typeof p === "number") s += `[${p}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(p)) s += (s ? "." : "") + p;
    else s += `[${JSON.stringify(p)}]`;
  }
  return s || "(object)";
}

// ajv's instancePath: "/spec/containers/0/name", "~1" for "/", "~0" for "~".
function ajvPath(instancePath) {
  if (!instancePath) return [];
  return instancePath.slice(1).split("/").map((p) => {
    const k = p.replace(/~1/g, "/").replace(/~0/g, "~");
    return /^(0|[1-9]\d*)$/.test(k) ? Number(k) : k;
  });
}

function ajvMessage(err) {
  switch (err.keyword) {
    case "required":
      return `missing required field ${JSON.stringify(err.params.missingProperty)}`;
    case "type":
      return `wrong type: must be ${err.params.type}`;
    case "enum":
      return `must be one of ${err.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`;
    default:
      return err.message || err.keyword;
  }
}

// ---------------------------------------------------------------------------
// The recording proxy

function track(value, path, nodes, cache) {
  if (value === null || typeof value !== "object") return value;
  if (cache.has(value)) return cache.get(value);
  const node = { path, value, reads: new Set(), enumerated: false };
  nodes.push(node);
  const proxy = new Proxy(value, {
    get(target, key, receiver) {
      const v = Reflect.get(target, key, receiver);
      if (typeof key !== "string") return v;
      node.reads.add(key);
      if (Object.prototype.hasOwnProperty.call(target, key) && v !== null && typeof v === "object") {
        const child = Array.isArray(target) && /^\d+$/.test(key) ? Number(key) : key;
        return track(v, path.concat([child]), nodes, cache);
      }
      return v;
    },
    has(target, key) {
      if (typeof key === "string") node.reads.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      node.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
  cache.set(value, proxy);
  return proxy;
}

function unknownFields(nodes, report) {
  // VALIDATE_DEBUG=1: list, on stderr, the objects taken as maps or left
  // unjudged, to see that no structured object escapes the check.
  if (process.env.VALIDATE_DEBUG) {
    for (const n of nodes) {
      if (!Array.isArray(n.value) && (n.enumerated || n.reads.size === 0)) {
        console.error(`not judged: ${pathText(n.path)} (${n.enumerated ? "map" : "never looked into"})`);
      }
    }
  }
  for (const n of nodes) {
    if (Array.isArray(n.value) || n.enumerated || n.reads.size === 0) continue;
    for (const k of Object.keys(n.value)) {
      if (!n.reads.has(k)) report(n.path.concat([k]), "unknown field");
    }
  }
}

// ---------------------------------------------------------------------------
// Kinds kubernetes-models knows

const classes = new Map();

async function modelClass(apiVersion, kind) {
  // "v1" is the core group; "apps/v1", "networking.k8s.io/v1", ...  One
  // module per kind: loading a group's index would compile all its schemas.
  if (!/^([a-z0-9][a-z0-9.-]*\/)?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) return null;
  const key = `${apiVersion}/${kind}`;
  if (!classes.has(key)) {
    let mod = null;
    try {
      mod = await import(`kubernetes-models/${key}`);
    } catch (e) {
      if (e.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED" && e.code !== "ERR_MODULE_NOT_FOUND") throw e;
    }
    const cls = mod ? mod[kind] : null;
    // a List, a sub-object (ObjectMeta) is no kind of its own
    classes.set(key, typeof cls === "function" && cls.kind === kind && cls.apiVersion === apiVersion ? cls : null);
  }
  return classes.get(key);
}

function checkModel(cls, doc, report) {
  const model = new cls(doc);
  const nodes = [];
  const proxy = track(model, [], nodes, new Map());
  try {
    model.validate.call(proxy);
  } catch (e) {
    if (!Array.isArray(e.errors)) throw e;
    // An int-or-string field fails once per branch: one line, both types.
    const types = new Map();
    for (const err of e.errors) {
      // oneOf/anyOf summaries repeat what the branches said
      if (err.keyword === "oneOf" || err.keyword === "anyOf") continue;
      if (err.keyword === "type") {
        if (!types.has(err.instancePath)) types.set(err.instancePath, []);
        types.get(err.instancePath).push(err.params.type);
        continue;
      }
      report(ajvPath(err.instancePath), ajvMessage(err));
    }
    for (const [at, ts] of types) {
      report(ajvPath(at), `wrong type: must be ${[...new Set(ts)].join(" or ")}`);
    }
  }
  unknownFields(nodes, report);
}

// ---------------------------------------------------------------------------
// CRDs: hand-written, strict, only the fields the Operator's CRD has that a
// PodMonitor here would plausibly use.  A field the Operator has and this
// list lacks is reported as unknown: add it here (from the Operator's CRD).

const str = { type: "string" };
const int = { type: "integer" };
const bool = { type: "boolean" };
const strMap = { type: "object", additionalProperties: str };
const strList = { type: "array", items: str };
const labelSelector = {
  type: "object",
  properties: {
    matchLabels: strMap,
    matchExpressions: {
      type: "array",
      items: {
        type: "object",
        required: ["key", "operator"],
        properties: { key: str, operator: { type: "string", enum: ["In", "NotIn", "Exists", "DoesNotExist"] }, values: strList },
      },
    },
  },
};
const objectMeta = {
  type: "object",
  properties: { name: str, namespace: str, labels: strMap, annotations: strMap },
};
const relabel = {
  type: "object",
  properties: {
    sourceLabels: strList, separator: str, targetLabel: str, regex: str, modulus: int, replacement: str,
    action: { type: "string", enum: ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
      "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep", "lowercase", "Lowercase",
      "uppercase", "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"] },
  },
};
const CRDS = {
  "monitoring.coreos.com/v1 PodMonitor": {
    type: "object",
    required: ["apiVersion", "kind", "spec"],
    properties: {
      apiVersion: str, kind: str, metadata: objectMeta,
      spec: {
        type: "object",
        required: ["selector"],
        properties: {
          selector: labelSelector,
          namespaceSelector: { type: "object", properties: { any: bool, matchNames: strList } },
          jobLabel: str, podTargetLabels: strList, sampleLimit: int, targetLimit: int,
          podMetricsEndpoints: {
            type: "array",
            items: {
              type: "object",
              properties: {
                port: str, portNumber: int, path: str, scheme: { type: "string", enum: ["http", "https"] },
                interval: str, scrapeTimeout: str, honorLabels: bool, honorTimestamps: bool,
                enableHttp2: bool, filterRunning: bool, followRedirects: bool,
                params: { type: "object", additionalProperties: strList },
                relabelings: { type: "array", items: relabel },
                metricRelabelings: { type: "array", items: relabel },
              },
            },
          },
        },
      },
    },
  },
};

function typeOf(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  return typeof v;
}

function checkSchema(schema, v, path, report) {
  const t = typeOf(v);
  if (t !== schema.type && !(schema.type === "number" && t === "integer")) {
    report(path, `wrong type: must be ${schema.type}`);
    return;
  }
  if (schema.enum && !schema.enum.includes(v)) {
    report(path, `must be one of ${schema.enum.map((x) => JSON.stringify(x)).join(", ")}`);
  }
  if (t === "array") {
    v.forEach((x, i) => checkSchema(schema.items, x, path.concat([i]), report));
  } else if (t === "object") {
    for (const r of schema.required || []) {
      if (v[r] === undefined) report(path, `missing required field ${JSON.stringify(r)}`);
    }
    for (const [k, x] of Object.entries(v)) {
      const sub = schema.properties ? schema.properties[k] : schema.additionalProperties;
      if (sub) checkSchema(sub, x, path.concat([k]), report);
      else report(path.concat([k]), "unknown field");
    }
  }
}

// ---------------------------------------------------------------------------

async function main() {
  let text;
  try {
    text = readFileSync(0, "utf8");
  } catch (e) {
    console.error(`validate: cannot read stdin: ${e.message}`);
    process.exit(2);
  }
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) {
    console.error("validate: not a YAML stream");
    process.exit(2);
  }
  let bad = false;
  for (const d of docs) {
    for (const e of d.errors) {
      console.error(`validate: YAML: ${e.message}`);
      bad = true;
    }
  }
  if (bad) process.exit(2);

  for (const d of docs) {
    const doc = d.toJS({ maxAliasCount: -1 });
    if (doc === null || doc === undefined) continue;
    const kind = doc && typeof doc.kind === "string" ? doc.kind : "(no kind)";
    const name = doc && doc.metadata && typeof doc.metadata.name === "string" ? doc.metadata.name : "(no name)";
    const report = (path, msg) => problems.push(`${kind}/${name}: ${pathText(path)}: ${msg}`);
    if (typeOf(doc) !== "object") {
      report([], "wrong type: a document must be an object");
      continue;
    }
    if (typeof doc.apiVersion !== "string" || typeof doc.kind !== "string") {
      if (typeof doc.apiVersion !== "string") report(["apiVersion"], "missing required field \"apiVersion\"");
      if (typeof doc.kind !== "string") report(["kind"], "missing required field \"kind\"");
      continue;
    }
    if (typeof doc.metadata?.name !== "string" || doc.metadata.name === "") {
      report(["metadata", "name"], "missing required field \"name\"");
    }
    const crd = CRDS[`${doc.apiVersion} ${doc.kind}`];
    const cls = crd ? null : await modelClass(doc.apiVersion, doc.kind);
    if (crd) checkSchema(crd, doc, [], report);
    else if (cls) checkModel(cls, doc, report);
    else report([], `unchecked kind: no schema for ${doc.apiVersion} ${doc.kind}`);
  }
  for (const p of problems) console.log(p);
  process.exit(problems.length ? 1 : 0);
}

main().catch((e) => {
  console.error(`validate: ${e.stack || e}`);
  process.exit(2);
});
