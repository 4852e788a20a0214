// Validates rendered Kubernetes manifests (the output of `kubectl kustomize`)
// offline, and the Grafana dashboard; run by validate_test.sh.
//
//   node validate.mjs --modules NODE_MODULES --root SOURCE_DIR
//        [--dashboard FILE] NAME=RENDERED.yaml ...
//
// For every object of every rendering:
//   1. the schema: kubernetes-models' JSON schemas of the Kubernetes API (the
//      ServiceMonitor: prometheus-operator's CRD schema), plus a strict pass
//      that rejects fields the schema does not know (a misspelt probe would
//      otherwise be dropped silently by the API server);
//   2. what Switchyard's deployment relies on: real `switchyard serve` flags
//      (read from services/cli/serve_command.cc) in args and the mounted
//      --config files, ports and probes that match the flags, Services,
//      autoscalers, budgets and the ServiceMonitor that select something,
//      the security settings, the data volume's co-location, the router kept
//      at one replica, and NetworkPolicies that admit only the router to
//      inference and retrieval gRPC.
// The dashboard: valid JSON, a Prometheus datasource variable that every
// panel uses, and only metric names that the services register.
//
// --self-test checks that broken objects are rejected (so a validator that
// accepts everything cannot pass). Exit status: 0 valid, 1 errors (listed
// on stderr), 2 usage.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const args = process.argv.slice(2);
let modules = null;
let root = null;
let dashboard = null;
let selfTest = false;
const renderings = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--modules") modules = args[++i];
  else if (args[i] === "--root") root = args[++i];
  else if (args[i] === "--dashboard") dashboard = args[++i];
  else if (args[i] === "--self-test") selfTest = true;
  else if (args[i].includes("=")) {
    const eq = args[i].indexOf("=");
    renderings.push({ name: args[i].slice(0, eq), file: args[i].slice(eq + 1) });
  } else {
    console.error(`validate.mjs: unexpected argument ${args[i]}`);
    process.exit(2);
  }
}
if (!modules || !root) {
  console.error("usage: node validate.mjs --modules DIR --root DIR [--dashboard F] [--self-test] NAME=FILE...");
  process.exit(2);
}
const require = createRequire(join(modules, "validate.cjs"));
const YAML = require("yaml");

// ---------------------------------------------------------------------------
// What the source says: serve's flags and the registered metrics.

function serveFlags() {
  const text = readFileSync(join(root, "services/cli/serve_command.cc"), "utf8");
  const flags = new Map();
  for (const m of text.matchAll(/flags\.Add(String|Int|Double|Bool|RepeatedString)\(\s*"([a-z0-9-]+)"/g)) {
    flags.set(m[2], m[1]);
  }
  if (/flags\.AddConfigFlag\(\)/.test(text)) flags.set("config", "String");
  if (!flags.has("target") || !flags.has("grpc-listen")) {
    throw new Error("could not read serve's flags from services/cli/serve_command.cc");
  }
  return flags;
}

function sourceFiles(dir, out = []) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) sourceFiles(p, out);
    else if (/\.(cc|h)$/.test(name)) out.push(p);
  }
  return out;
}

function registeredMetrics() {
  const metrics = new Map();
  for (const dir of ["services", "shared"]) {
    for (const file of sourceFiles(join(root, dir))) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/Build(Counter|Gauge|Histogram|Summary)\(\)\s*\.Name\("([a-zA-Z_:][a-zA-Z0-9_:]*)"\)/g)) {
        metrics.set(m[2], m[1]);
      }
    }
  }
  return metrics;
}

// ---------------------------------------------------------------------------
// Schemas.

function modelFor(apiVersion, kind) {
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  let path;
  if (group === "monitoring.coreos.com") {
    path = `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  } else if (group === "") {
    path = `kubernetes-models/${apiVersion}/${kind}`;
  } else {
    path = `kubernetes-models/${apiVersion}/${kind}`;
  }
  try {
    return require(path)[kind];
  } catch (e) {
    return null;
  }
}

// Runs the model's schema validator over a proxy of the object that records
// which properties the validator looks at. The compiled validators read
// every property their schema declares and enumerate the keys of maps
// (additionalProperties), so a key that was neither read nor enumerated is a
// field the schema does not have.
function schemaErrors(obj) {
  const Model = modelFor(obj.apiVersion || "", obj.kind || "");
  if (!Model) return [`no schema for apiVersion ${obj.apiVersion} kind ${obj.kind}`];
  const records = [];
  const proxies = new Map();
  const wrap = (value, path) => {
    if (value === null || typeof value !== "object") return value;
    if (proxies.has(value)) return proxies.get(value);
    const rec = { path, value, seen: new Set(), enumerated: false };
    records.push(rec);
    const proxy = new Proxy(value, {
      get(target, key, receiver) {
        const v = Reflect.get(target, key, receiver);
        if (typeof key !== "string") return v;
        rec.seen.add(key);
        if (!Object.prototype.hasOwnProperty.call(target, key)) return v;
        return wrap(v, Array.isArray(target) ? `${path}[${key}]` : `${path}.${key}`);
      },
      has(target, key) {
        if (typeof key === "string") rec.seen.add(key);
        return Reflect.has(target, key);
      },
      ownKeys(target) {
        rec.enumerated = true;
        return Reflect.ownKeys(target);
      },
    });
    proxies.set(value, proxy);
    return proxy;
  };
  const errors = [];
  try {
    Model.prototype.validate.call(wrap(obj, ""));
  } catch (e) {
    errors.push(`schema: ${e.message}`);
  }
  for (const rec of records) {
    if (Array.isArray(rec.value) || rec.enumerated) continue;
    for (const key of Object.keys(rec.value)) {
      if (!rec.seen.has(key)) errors.push(`schema: unknown field ${rec.path}.${key}`.replace(": unknown field .", ": unknown field "));
    }
  }
  return errors;
}

// ---------------------------------------------------------------------------
// Helpers.

function quantity(q) {
  if (typeof q === "number") return q;
  const m = /^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(q));
  if (!m) return NaN;
  const mult = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 };
  return parseFloat(m[1]) * (m[2] ? mult[m[2]] : 1);
}

function matches(selector, labels) {
  if (!selector) return false;
  labels = labels || {};
  for (const [k, v] of Object.entries(selector.matchLabels || {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions || []) {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    if (e.operator === "In" && !(has && e.values.includes(labels[e.key]))) return false;
    if (e.operator === "NotIn" && has && e.values.includes(labels[e.key])) return false;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
  }
  return true;
}

function parseFlagArgs(list, known, where, errors) {
  const values = new Map();
  for (const a of list) {
    if (!a.startsWith("--")) continue;
    const eq = a.indexOf("=");
    if (eq < 0) {
      errors.push(`${where}: ${a}: write flags as --name=value`);
      continue;
    }
    const name = a.slice(2, eq);
    if (!known.has(name)) errors.push(`${where}: --${name} is not a \`switchyard serve\` flag`);
    values.set(name, a.slice(eq + 1));
  }
  return values;
}

function parseConfigFile(text, known, where, errors) {
  const values = new Map();
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const eq = line.indexOf("=");
    if (eq < 0) {
      errors.push(`${where}:${i + 1}: expected \`name = value\``);
      return;
    }
    const name = line.slice(0, eq).trim();
    if (!known.has(name) || name === "config") {
      errors.push(`${where}:${i + 1}: unknown flag '${name}'`);
      return;
    }
    if (values.has(name)) errors.push(`${where}:${i + 1}: '${name}' set twice (a config file takes one line per flag)`);
    values.set(name, line.slice(eq + 1).trim());
  });
  return values;
}

function listenPort(address) {
  const m = /:(\d+)$/.exec(address || "");
  return m ? Number(m[1]) : null;
}

const SERVICE_OF_TARGET = {
  dataset: "switchyard.v1.DatasetService",
  training: "switchyard.v1.TrainingService",
  retrieval: "switchyard.v1.RetrievalService",
  inference: "switchyard.v1.InferenceService",
  router: "switchyard.v1.RouterService",
};
// Targets that write the data volume (SQLite or collection snapshots): one
// process each.
const SINGLE_WRITERS = new Set(["dataset", "training", "retrieval", "router"]);
const THREAD_FLAGS = {
  inference: ["inference-threads"],
  training: ["training-threads"],
  retrieval: ["search-threads"],
};
// Secrets the components expect the operator to create.
const EXTERNAL_SECRETS = new Set(["switchyard-auth", "switchyard-tls"]);

// ---------------------------------------------------------------------------
// The Switchyard invariants of one rendering.

function checkRendering(objects, flags) {
  const errors = [];
  const byKind = (k) => objects.filter((o) => o.kind === k);
  const find = (k, name) => objects.find((o) => o.kind === k && o.metadata?.name === name);
  const id = (o) => `${o.kind}/${o.metadata?.name}`;
  const deployments = byKind("Deployment");
  const services = byKind("Service");
  const hpas = byKind("HorizontalPodAutoscaler");

  const namespaces = new Set(objects.filter((o) => o.kind !== "Namespace").map((o) => o.metadata?.namespace ?? ""));
  if (namespaces.size > 1) errors.push(`objects span namespaces ${[...namespaces].join(", ")}`);
  for (const o of objects) {
    if (o.kind !== "Namespace" && o.metadata?.labels?.["app.kubernetes.io/part-of"] !== "switchyard") {
      errors.push(`${id(o)}: missing label app.kubernetes.io/part-of=switchyard`);
    }
  }

  const targets = new Map();  // deployment name -> target
  for (const d of deployments) {
    const where = id(d);
    const pod = d.spec?.template?.spec || {};
    const podLabels = d.spec?.template?.metadata?.labels || {};
    if (!matches(d.spec?.selector, podLabels)) errors.push(`${where}: selector does not match its pod template`);
    const volumes = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const v of pod.volumes || []) {
      if (v.configMap && !find("ConfigMap", v.configMap.name)) errors.push(`${where}: volume ${v.name}: no ConfigMap ${v.configMap.name}`);
      if (v.persistentVolumeClaim && !find("PersistentVolumeClaim", v.persistentVolumeClaim.claimName)) {
        errors.push(`${where}: volume ${v.name}: no PersistentVolumeClaim ${v.persistentVolumeClaim.claimName}`);
      }
      if (v.secret && !find("Secret", v.secret.secretName) && !EXTERNAL_SECRETS.has(v.secret.secretName)) {
        errors.push(`${where}: volume ${v.name}: no Secret ${v.secret.secretName}`);
      }
    }
    const psc = pod.securityContext || {};
    if (psc.runAsNonRoot !== true) errors.push(`${where}: pod securityContext.runAsNonRoot must be true`);
    if (!psc.runAsUser) errors.push(`${where}: pod securityContext.runAsUser must be a non-root uid`);
    if (pod.automountServiceAccountToken !== false) errors.push(`${where}: automountServiceAccountToken must be false (the pods never call the API server)`);

    const containers = pod.containers || [];
    if (containers.length !== 1) errors.push(`${where}: expected one container, got ${containers.length}`);
    for (const c of containers) {
      const cw = `${where} container ${c.name}`;
      if (typeof c.image !== "string" || c.image === "") {
        errors.push(`${cw}: no image`);
      } else if (!/:[^/]+$/.test(c.image) || c.image.endsWith(":latest")) {
        errors.push(`${cw}: image ${c.image} needs a version tag`);
      }
      const sc = c.securityContext || {};
      if (sc.readOnlyRootFilesystem !== true) errors.push(`${cw}: readOnlyRootFilesystem must be true`);
      if (sc.allowPrivilegeEscalation !== false) errors.push(`${cw}: allowPrivilegeEscalation must be false`);
      if (!(sc.capabilities?.drop || []).includes("ALL")) errors.push(`${cw}: capabilities must drop ALL`);
      const mounts = c.volumeMounts || [];
      const tmp = mounts.find((m) => m.mountPath === "/tmp");
      if (!tmp || !volumes.get(tmp.name)?.emptyDir) errors.push(`${cw}: /tmp must be an emptyDir (the root filesystem is read-only)`);
      for (const m of mounts) if (!volumes.has(m.name)) errors.push(`${cw}: volumeMount ${m.name} names no volume`);

      const res = c.resources || {};
      for (const r of ["cpu", "memory"]) {
        if (res.requests?.[r] === undefined) errors.push(`${cw}: no ${r} request`);
        if (res.limits?.[r] === undefined) errors.push(`${cw}: no ${r} limit`);
        if (res.requests?.[r] !== undefined && res.limits?.[r] !== undefined &&
            quantity(res.requests[r]) > quantity(res.limits[r])) {
          errors.push(`${cw}: ${r} request ${res.requests[r]} above its limit ${res.limits[r]}`);
        }
      }
      const gpus = quantity(res.limits?.["nvidia.com/gpu"] ?? 0);
      if (res.requests?.["nvidia.com/gpu"] !== undefined && quantity(res.requests["nvidia.com/gpu"]) !== gpus) {
        errors.push(`${cw}: nvidia.com/gpu request and limit differ`);
      }
      const cpuLimit = Math.ceil(quantity(res.limits?.cpu ?? 0));

      // The command line and the --config file it names.
      const argv = c.args || [];
      if (c.command) errors.push(`${cw}: set args, not command (the image's entrypoint is switchyard)`);
      if (argv[0] !== "serve") {
        errors.push(`${cw}: args must start with serve`);
        continue;
      }
      const cli = parseFlagArgs(argv.slice(1), flags, cw, errors);
      const target = cli.get("target");
      if (!SERVICE_OF_TARGET[target]) {
        errors.push(`${cw}: --target must be one service (dataset, training, retrieval, inference, router), got ${target}`);
        continue;
      }
      targets.set(d.metadata.name, target);
      let conf = new Map();
      const configPath = cli.get("config");
      if (configPath) {
        const dir = configPath.slice(0, configPath.lastIndexOf("/"));
        const file = configPath.slice(configPath.lastIndexOf("/") + 1);
        const mount = mounts.find((m) => m.mountPath === dir);
        const cm = mount && volumes.get(mount.name)?.configMap && find("ConfigMap", volumes.get(mount.name).configMap.name);
        if (!cm) {
          errors.push(`${cw}: --config=${configPath} is not in a mounted ConfigMap`);
        } else if (cm.data?.[file] === undefined) {
          errors.push(`${cw}: ConfigMap ${cm.metadata.name} has no key ${file} for --config`);
        } else {
          conf = parseConfigFile(cm.data[file], flags, `${cw} ${configPath}`, errors);
          if (conf.has("target") && conf.get("target") !== target) errors.push(`${cw}: ${file} sets target ${conf.get("target")}, args --target=${target}`);
        }
      }
      const flag = (n) => (cli.has(n) ? cli.get(n) : conf.get(n));

      // Ports, probes and mounts agree with the flags.
      const ports = new Map((c.ports || []).map((p) => [p.name, p.containerPort]));
      const grpcPort = listenPort(flag("grpc-listen"));
      const metricsPort = listenPort(flag("metrics-listen"));
      if (!/^0\.0\.0\.0:|^\[::\]:/.test(flag("grpc-listen") || "")) errors.push(`${cw}: --grpc-listen must bind all interfaces, got ${flag("grpc-listen")}`);
      if (grpcPort === null || ports.get("grpc") !== grpcPort) errors.push(`${cw}: container port grpc (${ports.get("grpc")}) is not --grpc-listen (${flag("grpc-listen")})`);
      if (metricsPort === null || ports.get("metrics") !== metricsPort) errors.push(`${cw}: container port metrics (${ports.get("metrics")}) is not --metrics-listen (${flag("metrics-listen")})`);
      const ann = d.spec.template.metadata?.annotations || {};
      if (ann["prometheus.io/scrape"] !== "true" || Number(ann["prometheus.io/port"]) !== metricsPort || ann["prometheus.io/path"] !== "/metrics") {
        errors.push(`${cw}: prometheus.io annotations must scrape /metrics on ${metricsPort}`);
      }
      const tls = Boolean(flag("tls-cert"));
      const probePort = (p) => p?.grpc?.port ?? p?.tcpSocket?.port;
      const portOk = (p) => p === grpcPort || p === "grpc";
      for (const kind of ["readinessProbe", "livenessProbe"]) {
        const probe = c[kind];
        if (!probe) {
          errors.push(`${cw}: no ${kind}`);
          continue;
        }
        if (tls && probe.grpc) errors.push(`${cw}: ${kind} is a gRPC probe but the port serves TLS (kubelet's gRPC probes cannot)`);
        if (!tls && !probe.grpc) errors.push(`${cw}: ${kind} must be a native gRPC probe`);
        if (!portOk(probePort(probe))) errors.push(`${cw}: ${kind} checks port ${probePort(probe)}, not the gRPC port ${grpcPort}`);
      }
      if (c.startupProbe && !portOk(probePort(c.startupProbe))) errors.push(`${cw}: startupProbe checks port ${probePort(c.startupProbe)}`);
      if (c.readinessProbe?.grpc && c.readinessProbe.grpc.service !== SERVICE_OF_TARGET[target]) {
        errors.push(`${cw}: readinessProbe checks service ${c.readinessProbe.grpc.service}, the target serves ${SERVICE_OF_TARGET[target]}`);
      }
      const dataMount = mounts.find((m) => m.mountPath === flag("data-dir"));
      const dataVolume = dataMount && volumes.get(dataMount.name);
      if (!dataVolume?.persistentVolumeClaim) errors.push(`${cw}: --data-dir=${flag("data-dir")} is not a mounted PersistentVolumeClaim`);
      if (target !== "inference" && dataMount?.readOnly) errors.push(`${cw}: ${target} writes --data-dir but it is mounted read-only`);
      for (const f of ["auth-tokens", "tls-cert", "tls-key", "tls-client-ca", "backend-tls-ca"]) {
        const p = flag(f);
        if (!p) continue;
        const m = mounts.find((mm) => p.startsWith(mm.mountPath + "/"));
        if (!m || !volumes.get(m.name)?.secret) errors.push(`${cw}: --${f}=${p} is not in a mounted Secret`);
      }
      if (flag("tls-cert") && !flag("tls-key")) errors.push(`${cw}: --tls-cert without --tls-key`);

      // The data volume's pods share a node (ReadWriteOnce, SQLite).
      if (dataVolume?.persistentVolumeClaim) {
        const claim = dataVolume.persistentVolumeClaim.claimName;
        const label = podLabels["switchyard.dev/data-volume"];
        if (label !== claim) errors.push(`${where}: pods mounting ${claim} need label switchyard.dev/data-volume=${claim}`);
        const terms = pod.affinity?.podAffinity?.requiredDuringSchedulingIgnoredDuringExecution || [];
        if (!terms.some((t) => t.topologyKey === "kubernetes.io/hostname" && t.labelSelector?.matchLabels?.["switchyard.dev/data-volume"] === claim)) {
          errors.push(`${where}: needs required podAffinity on switchyard.dev/data-volume=${claim} by kubernetes.io/hostname`);
        }
      }

      // Threads: 0 would mean every core of the node.
      for (const f of THREAD_FLAGS[target] || []) {
        const n = Number(flag(f) ?? 0);
        if (!(n > 0)) errors.push(`${cw}: set --${f} to the CPU limit (0 means every core of the node)`);
        else if (cpuLimit && n > cpuLimit) errors.push(`${cw}: --${f}=${n} above the CPU limit ${res.limits.cpu}`);
      }
      const omp = (c.env || []).find((e) => e.name === "OMP_NUM_THREADS");
      if (omp && cpuLimit && Number(omp.value) > cpuLimit) errors.push(`${cw}: OMP_NUM_THREADS=${omp.value} above the CPU limit`);

      // Devices.
      const device = flag("device") || "auto";
      if (target === "inference" && /^cuda/.test(device) && gpus < 1) errors.push(`${cw}: --device=${device} without an nvidia.com/gpu limit`);
      if (target === "inference" && gpus >= 1 && device === "cpu") errors.push(`${cw}: has a GPU but --device=cpu`);
      if (gpus >= 1 && !["inference", "training"].includes(target)) errors.push(`${cw}: ${target} does not use a GPU`);

      // Shutdown: the grace period covers the drain.
      const drain = Number(flag("drain-seconds") ?? 30);
      const grace = pod.terminationGracePeriodSeconds ?? 30;
      if (grace <= drain) errors.push(`${where}: terminationGracePeriodSeconds ${grace} must exceed --drain-seconds ${drain}`);

      // One writer per volume.
      if (SINGLE_WRITERS.has(target)) {
        if (d.spec.strategy?.type !== "Recreate") errors.push(`${where}: ${target} writes the data volume: use strategy Recreate`);
        const hpa = hpas.find((h) => h.spec?.scaleTargetRef?.kind === "Deployment" && h.spec.scaleTargetRef.name === d.metadata.name);
        const max = hpa ? hpa.spec.maxReplicas : d.spec.replicas ?? 1;
        if (max > 1 || (d.spec.replicas ?? 1) > 1) errors.push(`${where}: ${target} must run one replica (embedded SQLite and in-memory state), got up to ${max}`);
      }

      // The router's backends are Services of this rendering.
      if (target === "router") {
        for (const f of ["inference-addr", "retrieval-addr", "dataset-addr"]) {
          const addr = flag(f);
          if (!addr) {
            errors.push(`${cw}: no --${f}`);
            continue;
          }
          const [host, port] = addr.split(":");
          const svc = find("Service", host.split(".")[0]);
          if (!svc) errors.push(`${cw}: --${f}=${addr}: no Service ${host}`);
          else if (!(svc.spec.ports || []).some((p) => p.port === Number(port) && p.name === "grpc")) {
            errors.push(`${cw}: --${f}=${addr}: Service ${host} has no grpc port ${port}`);
          }
        }
      }
    }
  }
  for (const t of Object.keys(SERVICE_OF_TARGET)) {
    if (![...targets.values()].includes(t)) errors.push(`no Deployment runs --target=${t}`);
  }

  // Services select pods whose ports they name.
  const podsOf = (selector) => deployments.filter((d) => matches({ matchLabels: selector }, d.spec?.template?.metadata?.labels));
  for (const s of services) {
    const pods = podsOf(s.spec?.selector || {});
    if (!s.spec?.selector || pods.length === 0) {
      errors.push(`${id(s)}: selects no Deployment's pods`);
      continue;
    }
    for (const p of s.spec.ports || []) {
      for (const d of pods) {
        const cports = (d.spec.template.spec.containers || []).flatMap((c) => c.ports || []);
        const ok = typeof p.targetPort === "string" ? cports.some((cp) => cp.name === p.targetPort) : cports.some((cp) => cp.containerPort === (p.targetPort ?? p.port));
        if (!ok) errors.push(`${id(s)}: port ${p.name} targets ${p.targetPort}, which ${id(d)} does not expose`);
      }
    }
    const names = (s.spec.ports || []).map((p) => p.name);
    if (!names.includes("grpc") || !names.includes("metrics")) errors.push(`${id(s)}: needs ports named grpc and metrics`);
  }

  for (const h of hpas) {
    const ref = h.spec?.scaleTargetRef || {};
    if (ref.kind !== "Deployment" || !find("Deployment", ref.name)) errors.push(`${id(h)}: scaleTargetRef ${ref.kind}/${ref.name} is not in the rendering`);
    if ((h.spec?.minReplicas ?? 1) > h.spec?.maxReplicas) errors.push(`${id(h)}: minReplicas above maxReplicas`);
  }
  for (const name of ["switchyard-router", "switchyard-inference"]) {
    if (!hpas.some((h) => h.spec?.scaleTargetRef?.name === name)) errors.push(`no HorizontalPodAutoscaler for ${name}`);
    if (!byKind("PodDisruptionBudget").some((p) => matches(p.spec?.selector, find("Deployment", name)?.spec?.template?.metadata?.labels))) {
      errors.push(`no PodDisruptionBudget for ${name}`);
    }
  }
  for (const p of byKind("PodDisruptionBudget")) {
    const pods = deployments.filter((d) => matches(p.spec?.selector, d.spec?.template?.metadata?.labels));
    if (pods.length === 0) errors.push(`${id(p)}: selects no Deployment's pods`);
    for (const d of pods) {
      const single = !hpas.some((h) => h.spec?.scaleTargetRef?.name === d.metadata.name && h.spec.maxReplicas > 1);
      if (single && p.spec.minAvailable !== undefined && quantity(p.spec.minAvailable) >= 1) {
        errors.push(`${id(p)}: minAvailable on the single-replica ${id(d)} would block every node drain`);
      }
    }
  }
  for (const m of byKind("ServiceMonitor")) {
    const selected = services.filter((s) => matches(m.spec?.selector, s.metadata?.labels));
    if (selected.length === 0) errors.push(`${id(m)}: selects no Service`);
    for (const e of m.spec?.endpoints || []) {
      for (const s of selected) {
        if (!(s.spec.ports || []).some((p) => p.name === e.port)) errors.push(`${id(m)}: ${id(s)} has no port ${e.port}`);
      }
    }
  }

  // NetworkPolicies: inference and retrieval gRPC admit the router and
  // otherwise only pods picked by a podSelector (never everyone, another
  // namespace or an IP block); the router can reach them.
  const policies = byKind("NetworkPolicy");
  const router = deployments.find((d) => targets.get(d.metadata.name) === "router");
  for (const d of deployments) {
    const target = targets.get(d.metadata.name);
    if (target !== "inference" && target !== "retrieval") continue;
    const labels = d.spec.template.metadata.labels;
    const grpcPort = (d.spec.template.spec.containers[0].ports || []).find((p) => p.name === "grpc")?.containerPort;
    const selecting = policies.filter((p) => matches(p.spec?.podSelector, labels) && (p.spec.policyTypes || ["Ingress"]).includes("Ingress"));
    if (selecting.length === 0) {
      errors.push(`${id(d)}: no NetworkPolicy limits who reaches it`);
      continue;
    }
    let routerAdmitted = false;
    for (const p of selecting) {
      for (const rule of p.spec.ingress || []) {
        const coversGrpc = !rule.ports || rule.ports.some((pp) => pp.port === undefined || pp.port === "grpc" || pp.port === grpcPort);
        if (!coversGrpc) continue;
        const from = rule.from || [];
        if (from.length === 0) errors.push(`${id(p)}: admits everyone to ${id(d)} gRPC`);
        for (const peer of from) {
          if (peer.ipBlock || peer.namespaceSelector || !peer.podSelector) {
            errors.push(`${id(p)}: admits ${JSON.stringify(peer)} to ${id(d)} gRPC; only pods of the namespace picked by a podSelector may`);
          }
          if (router && peer.podSelector && !peer.namespaceSelector && matches(peer.podSelector, router.spec.template.metadata.labels)) routerAdmitted = true;
        }
      }
    }
    if (!routerAdmitted) errors.push(`${id(d)}: no NetworkPolicy admits the router to its gRPC port`);
  }
  return errors;
}

// ---------------------------------------------------------------------------
// The Grafana dashboard.

function checkDashboard(file, metrics) {
  const errors = [];
  let dash;
  try {
    dash = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    return [`${file}: ${e.message}`];
  }
  const vars = dash.templating?.list || [];
  const ds = vars.find((v) => v.type === "datasource" && v.query === "prometheus");
  if (!ds) errors.push(`${file}: needs a templating variable of type datasource, query prometheus`);
  const dsRefs = new Set([`\${${ds?.name}}`, `$${ds?.name}`]);
  const panels = [];
  const collect = (list) => {
    for (const p of list || []) {
      panels.push(p);
      collect(p.panels);
    }
  };
  collect(dash.panels);
  if (panels.length === 0) errors.push(`${file}: no panels`);
  const ids = new Set();
  const histograms = new Set([...metrics].filter(([, t]) => t === "Histogram").map(([n]) => n));
  const exprs = [];
  for (const v of vars) if (v.type === "query") exprs.push({ where: `variable ${v.name}`, expr: typeof v.query === "string" ? v.query : v.query?.query || "", ds: v.datasource });
  for (const p of panels) {
    const where = `panel ${p.id} "${p.title}"`;
    if (ids.has(p.id)) errors.push(`${file}: ${where}: duplicate id`);
    ids.add(p.id);
    if (!p.gridPos) errors.push(`${file}: ${where}: no gridPos`);
    if (p.type === "row") continue;
    if (!p.targets || p.targets.length === 0) errors.push(`${file}: ${where}: no queries`);
    for (const t of p.targets || []) exprs.push({ where, expr: t.expr || "", ds: t.datasource || p.datasource });
  }
  for (const { where, expr, ds: d } of exprs) {
    if (!expr.trim()) errors.push(`${file}: ${where}: empty query`);
    if (!d || !dsRefs.has(d.uid)) errors.push(`${file}: ${where}: datasource must be the variable \${${ds?.name}}`);
    const names = expr.match(/\b(?:switchyard|grpc_server)_[a-z0-9_]+\b/g) || [];
    if (names.length === 0 && !where.startsWith("variable")) errors.push(`${file}: ${where}: no Switchyard metric in "${expr}"`);
    for (const n of names) {
      const base = n.replace(/_(bucket|sum|count)$/, "");
      if (!metrics.has(n) && !(histograms.has(base) && base !== n)) {
        errors.push(`${file}: ${where}: ${n} is not a metric the services register`);
      }
      if (n.endsWith("_bucket") && !histograms.has(base)) errors.push(`${file}: ${where}: ${n}: ${base} is not a histogram`);
    }
    if (/histogram_quantile/.test(expr) && !/_bucket\b/.test(expr)) errors.push(`${file}: ${where}: histogram_quantile over no _bucket series`);
    if (/histogram_quantile/.test(expr) && !/\ble\b/.test(expr)) errors.push(`${file}: ${where}: histogram_quantile must keep the le label`);
  }
  return errors;
}

// ---------------------------------------------------------------------------

function loadRendering(file) {
  const docs = YAML.parseAllDocuments(readFileSync(file, "utf8"));
  const objects = [];
  const errors = [];
  for (const doc of docs) {
    if (doc.errors.length) errors.push(...doc.errors.map((e) => `YAML: ${e.message}`));
    const o = doc.toJS();
    if (o) objects.push(o);
  }
  return { objects, errors };
}

function validateObjects(objects, flags) {
  const errors = [];
  for (const o of objects) {
    for (const e of schemaErrors(o)) errors.push(`${o.kind}/${o.metadata?.name}: ${e}`);
  }
  errors.push(...checkRendering(objects, flags));
  return errors;
}

let failed = 0;
const flags = serveFlags();
const metrics = registeredMetrics();

if (selfTest) {
  // A Deployment with three mistakes, each of which must be caught.
  const broken = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "broken", labels: { "app.kubernetes.io/part-of": "switchyard" } },
    spec: {
      replicas: "two",
      selector: { matchLabels: { app: "broken" } },
      template: {
        metadata: { labels: { app: "broken" } },
        spec: { containers: [{ name: "c", readinesProbe: { grpc: { port: 50051 } }, args: ["serve", "--target=router", "--grpc-lisen=0.0.0.0:1"] }] },
      },
    },
  };
  const errors = validateObjects([broken], flags).join("\n");
  const expected = [
    [/spec\/replicas must be integer/, "replicas: \"two\" (schema)"],
    [/unknown field .*readinesProbe/, "a misspelt field (strict schema)"],
    [/container c: no image/, "a container without an image"],
    [/--grpc-lisen is not a `switchyard serve` flag/, "an unknown serve flag"],
  ];
  for (const [re, what] of expected) {
    if (!re.test(errors)) {
      console.error(`self-test: ${what} was not rejected; the validator reported:\n${errors}`);
      failed++;
    }
  }
  const badDash = checkDashboard("/dev/null", metrics);
  if (badDash.length === 0) {
    console.error("self-test: an empty dashboard file was accepted");
    failed++;
  }
  if (!failed) console.log("self-test: broken objects are rejected");
}

for (const r of renderings) {
  const { objects, errors } = loadRendering(r.file);
  errors.push(...validateObjects(objects, flags));
  const kinds = {};
  for (const o of objects) kinds[o.kind] = (kinds[o.kind] || 0) + 1;
  if (errors.length) {
    failed++;
    console.error(`FAIL ${r.name}: ${errors.length} error(s)`);
    for (const e of errors) console.error(`  ${r.name}: ${e}`);
  } else {
    console.log(`ok   ${r.name}: ${objects.length} objects (${Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(", ")})`);
  }
}

if (dashboard) {
  const errors = checkDashboard(dashboard, metrics);
  if (errors.length) {
    failed++;
    console.error(`FAIL dashboard: ${errors.length} error(s)`);
    for (const e of errors) console.error(`  ${e}`);
  } else {
    console.log(`ok   dashboard: ${dashboard}`);
  }
}
process.exit(failed ? 1 : 0);
