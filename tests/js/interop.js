// A grpc-js client with default options against an mkv node (run by
// tests/test_interop.py). grpc-js keeps HTTP/2's default 65,535-byte stream
// and connection windows, so responses larger than a window only arrive if
// the server sends as the windows open.
//
// Usage: node interop.js HOST:PORT PROTOS_DIR
// Prints one JSON line: {"ok": ..., "steps": {name: {"ok", "seconds", "error"?}}}.
"use strict";

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const DEADLINE_MS = 15000;

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: deadline() }, (error, response) =>
      error ? reject(new Error(`${method}: ${error.code} ${error.details}`)) : resolve(response),
    );
  });
}

function value(size, seed) {
  const buffer = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buffer[i] = (i * 31 + seed) & 0xff;
  return buffer;
}

// Runs one step, recording its time and outcome; later steps run whatever
// happened, so one report shows every failure.
async function step(steps, name, action) {
  const started = process.hrtime.bigint();
  try {
    await action();
    steps[name] = { ok: true };
  } catch (error) {
    steps[name] = { ok: false, error: String(error.message || error) };
  }
  steps[name].seconds = Number(process.hrtime.bigint() - started) / 1e9;
}

async function upsertAndGet(client, key, data) {
  const put = await call(client, "Upsert", { entries: [{ key: Buffer.from(key), value: data }] });
  if (put.status !== "OK") throw new Error(`Upsert ${key}: ${put.status}`);
  const got = await call(client, "Get", { key: Buffer.from(key) });
  if (!got.found || !data.equals(got.value)) {
    throw new Error(`Get ${key}: found=${got.found}, ${got.value.length} of ${data.length} bytes`);
  }
}

async function main() {
  const [address, protos] = process.argv.slice(2);
  const definition = protoLoader.loadSync("mkv/v1/data.proto", {
    includeDirs: [protos],
    enums: String,
    longs: String,
    defaults: true,
  });
  const { DataPlane } = grpc.loadPackageDefinition(definition).mkv.v1;
  // Default options: no window tuning, as most grpc-js users run it.
  const client = new DataPlane(address, grpc.credentials.createInsecure());
  const steps = {};
  await step(steps, "upsert_get_64k", () => upsertAndGet(client, "js:64k", value(64 * 1024, 1)));
  await step(steps, "upsert_get_500k", () => upsertAndGet(client, "js:500k", value(500 * 1024, 2)));
  const sixty = value(60 * 1024, 3);
  await step(steps, "concurrent_gets_60k", async () => {
    await call(client, "Upsert", { entries: [{ key: Buffer.from("js:60k"), value: sixty }] });
    const gets = Array.from({ length: 10 }, () => call(client, "Get", { key: Buffer.from("js:60k") }));
    const results = await Promise.allSettled(gets);
    const failed = results.filter((r) => r.status === "rejected" || !sixty.equals(r.value.value));
    if (failed.length) {
      const reasons = failed.map((r) => r.reason || "wrong value").join("; ");
      throw new Error(`${failed.length} of 10 concurrent Gets failed: ${reasons}`);
    }
  });
  client.close();
  console.log(JSON.stringify({ ok: Object.values(steps).every((s) => s.ok), steps }));
}

main();
