// client.mjs drives Gatehouse's gRPC-Web endpoint with the real browser
// client libraries, unchanged, from Node: Connect-Web's
// createGrpcWebTransport (@connectrpc/connect-web, binary format) and the
// official grpc-web runtime (grpc-web's GrpcWebClientBase, in both its
// "binary" (application/grpc-web+proto) and "text"
// (application/grpc-web-text) formats, over the xhr2 XMLHttpRequest
// polyfill). It is run by TestGRPCWebClientLibraries in test/connectweb_test.go.
//
// Usage:
//
//	npm ci --prefix test/testdata/connectweb --no-audit --no-fund
//	node client.mjs <gateway base URL> <FileDescriptorSet path>
//
// The FileDescriptorSet (binary) holds examples/greeter/v1/greeter.proto,
// google/rpc/error_details.proto, google/rpc/status.proto and their
// imports: the service and every message type are built from it at
// runtime, so there is no generated code.
// Against the example greeter it makes, with each library:
//
//   - a unary SayHello with a custom request header (x-request-id), reading
//     the response header the greeter echoes it in (x-request-id-seen);
//   - a server-streaming StreamHellos, collecting every message;
//   - a SayHello with an empty name, which the gateway's validate
//     interceptor refuses with INVALID_ARGUMENT and a google.rpc.BadRequest
//     detail (a trailers-only answer);
//   - a StreamHellos that fails mid-stream with ABORTED and a
//     google.rpc.ErrorInfo detail (header x-test-backend: failing routes it
//     to the failing test backend);
//
// and prints one JSON summary on stdout, with the request and response
// content types of every HTTP exchange ("wire"), for the Go test to judge.
// The expected failures are reported in the summary; any other error ends
// the script with a non-zero exit status.

import { readFileSync } from "node:fs";
import { fromBinary, toBinary, toJson, create, createFileRegistry } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import XMLHttpRequestPolyfill from "xhr2";

const [baseUrl, descriptorPath] = process.argv.slice(2);
if (!baseUrl || !descriptorPath) {
  console.error("usage: node client.mjs <gateway base URL> <FileDescriptorSet path>");
  process.exit(2);
}

const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptorPath)));
const serviceName = "examples.greeter.v1.GreeterService";
const service = registry.getService(serviceName);
const badRequestSchema = registry.getMessage("google.rpc.BadRequest");
const errorInfoSchema = registry.getMessage("google.rpc.ErrorInfo");
const statusSchema = registry.getMessage("google.rpc.Status");
for (const [name, d] of Object.entries({ service, badRequestSchema, errorInfoSchema, statusSchema })) {
  if (!d) throw new Error(`${name} is not in the descriptor set ${descriptorPath}`);
}
const json = (schema, msg) => toJson(schema, msg, { registry });

// wire records the request and response content types of every HTTP
// exchange, to show which protocol mode each library spoke. Only observes:
// the libraries' requests and responses pass through unchanged.
let wire = [];
const nodeFetch = globalThis.fetch;
globalThis.fetch = async (input, init) => {
  const req = new Request(input, init);
  const entry = { request: req.headers.get("content-type"), response: null };
  wire.push(entry);
  const res = await nodeFetch(req);
  entry.response = res.headers.get("content-type");
  return res;
};
class RecordingXMLHttpRequest extends XMLHttpRequestPolyfill {
  constructor() {
    super();
    const entry = { request: null, response: null };
    wire.push(entry);
    this.addEventListener("readystatechange", () => {
      if (this.readyState >= 2) entry.response = this.getResponseHeader("content-type");
    });
    this.entry = entry;
  }
  setRequestHeader(name, value) {
    if (name.toLowerCase() === "content-type") this.entry.request = value;
    super.setRequestHeader(name, value);
  }
}
const takeWire = () => {
  const w = wire;
  wire = [];
  return w;
};
const failing = { "x-test-backend": "failing" };

// connectWeb runs the calls with @connectrpc/connect-web.
async function connectWeb() {
  const transport = createGrpcWebTransport({ baseUrl, useBinaryFormat: true });
  const client = createClient(service, transport);
  const out = {};
  const errorSummary = (err) => {
    const e = ConnectError.from(err);
    return {
      code: Code[e.code],
      rawMessage: e.rawMessage,
      rawDetailTypes: e.details.map((d) => ("desc" in d ? d.desc.typeName : d.type)),
      badRequests: e.findDetails(badRequestSchema).map((m) => json(badRequestSchema, m)),
      errorInfos: e.findDetails(errorInfoSchema).map((m) => json(errorInfoSchema, m)),
    };
  };

  {
    let header = new Headers();
    const res = await client.sayHello({ name: "Ada" }, { headers: { "x-request-id": "cw-1" }, onHeader: (h) => (header = h) });
    out.unary = {
      message: res.message,
      servedBy: res.servedBy,
      requestIdSeen: header.get("x-request-id-seen"),
    };
  }
  {
    const messages = [];
    let seen = null;
    for await (const m of client.streamHellos(
      { name: "Bo", count: 25 },
      { headers: { "x-request-id": "cw-2" }, onHeader: (h) => (seen = h.get("x-request-id-seen")) },
    )) {
      messages.push({ message: m.message, index: m.index });
    }
    out.stream = { messages, requestIdSeen: seen };
  }
  try {
    await client.sayHello({ name: "" });
    out.invalid = { code: "OK" };
  } catch (err) {
    out.invalid = errorSummary(err);
  }
  {
    const messages = [];
    try {
      for await (const m of client.streamHellos({ name: "fail", count: 10 }, { headers: failing })) {
        messages.push({ message: m.message, index: m.index });
      }
      out.midStream = { code: "OK", messages };
    } catch (err) {
      out.midStream = { ...errorSummary(err), messages };
    }
  }
  out.wire = takeWire();
  return out;
}

// grpcWeb runs the calls with the official grpc-web runtime in one format
// ("binary" or "text").
async function grpcWeb(grpcWebLib, format) {
  const { GrpcWebClientBase, MethodDescriptor, MethodType } = grpcWebLib;
  const client = new GrpcWebClientBase({ format });
  const descriptor = (method, type) => {
    const m = service.methods.find((x) => x.name === method);
    return new MethodDescriptor(
      `/${serviceName}/${method}`,
      type,
      Object, // the request and response "classes" are unused with explicit (de)serializers
      Object,
      (req) => toBinary(m.input, create(m.input, req)),
      (bytes) => fromBinary(m.output, bytes),
    );
  };
  const sayHello = descriptor("SayHello", MethodType.UNARY);
  const streamHellos = descriptor("StreamHellos", MethodType.SERVER_STREAMING);
  const url = `${baseUrl}/${serviceName}`;
  // errorSummary decodes grpc-status-details-bin from the error's metadata
  // (the trailers), as a grpc-web application must.
  const errorSummary = (err) => {
    const md = err.metadata ?? {};
    const out = { code: err.code, message: err.message, detailTypes: [], badRequests: [], errorInfos: [] };
    const bin = md["grpc-status-details-bin"];
    if (bin) {
      const st = fromBinary(statusSchema, Buffer.from(bin, "base64"));
      out.statusCode = st.code;
      for (const any of st.details) {
        const typeName = any.typeUrl.slice(any.typeUrl.lastIndexOf("/") + 1);
        out.detailTypes.push(typeName);
        const schema = registry.getMessage(typeName);
        if (schema === badRequestSchema) out.badRequests.push(json(schema, fromBinary(schema, any.value)));
        if (schema === errorInfoSchema) out.errorInfos.push(json(schema, fromBinary(schema, any.value)));
      }
    }
    return out;
  };
  const unary = (req, metadata) =>
    new Promise((resolve) => {
      let header = {};
      const call = client.rpcCall(`${url}/SayHello`, req, metadata, sayHello, (err, res) =>
        resolve({ err, res, header }),
      );
      call.on("metadata", (md) => (header = md));
    });
  const stream = (req, metadata) =>
    new Promise((resolve) => {
      const messages = [];
      let header = {};
      let done = false;
      const finish = (err) => {
        if (!done) {
          done = true;
          resolve({ err, messages, header });
        }
      };
      const call = client.serverStreaming(`${url}/StreamHellos`, req, metadata, streamHellos);
      call.on("metadata", (md) => (header = md));
      call.on("data", (m) => messages.push({ message: m.message, index: m.index }));
      call.on("error", (err) => finish(err));
      call.on("end", () => finish(null));
    });

  const out = {};
  {
    const { err, res, header } = await unary({ name: "Ada" }, { "x-request-id": "gw-1" });
    out.unary = err
      ? { error: errorSummary(err) }
      : {
          message: res.message,
          servedBy: res.servedBy,
          requestIdSeen: header["x-request-id-seen"] ?? null,
        };
  }
  {
    const { err, messages, header } = await stream({ name: "Bo", count: 25 }, { "x-request-id": "gw-2" });
    out.stream = { messages, requestIdSeen: header["x-request-id-seen"] ?? null };
    if (err) out.stream.error = errorSummary(err);
  }
  {
    const { err } = await unary({ name: "" }, {});
    out.invalid = err ? errorSummary(err) : { code: 0 };
  }
  {
    const { err, messages } = await stream({ name: "fail", count: 10 }, failing);
    out.midStream = { ...(err ? errorSummary(err) : { code: 0 }), messages };
  }
  out.wire = takeWire();
  return out;
}

const summary = { connectWeb: await connectWeb() };
// grpc-web uses XMLHttpRequest, which Node lacks: install the polyfill
// before the runtime is loaded.
globalThis.XMLHttpRequest = RecordingXMLHttpRequest;
const grpcWebLib = (await import("grpc-web")).default;
summary.grpcWebBinary = await grpcWeb(grpcWebLib, "binary");
summary.grpcWebText = await grpcWeb(grpcWebLib, "text");
process.stdout.write(JSON.stringify(summary, null, 2) + "\n");
