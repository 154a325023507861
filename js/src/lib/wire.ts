/**
 * Wire arrays (docs/widget_protocol.md, "Arrays"): `{dtype, shape, buffer | b64, scale?, offset?}`.
 * Little-endian, C order. The buffer may be a DataView (live kernel), an ArrayBuffer, any typed
 * array / Uint8Array, or base64 text under `b64` (static HTML export).
 */

export type WireDType = "float16" | "float32" | "int32" | "int16" | "uint16" | "uint8";

export interface WireArray {
  dtype: WireDType;
  shape: number[];
  buffer?: DataView | ArrayBuffer | ArrayBufferView;
  b64?: string;
  scale?: number | null;
  offset?: number | null;
}

export interface Decoded {
  shape: number[];
  data: Float32Array | Int32Array;
}

const ITEM_SIZE: Record<WireDType, number> = {
  float16: 2,
  float32: 4,
  int32: 4,
  int16: 2,
  uint16: 2,
  uint8: 1,
};

let HALF_TABLE: Float32Array | null = null;

/** IEEE 754 binary16 bit pattern → number (subnormals, ±0, ±inf and NaN included). */
export function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // zero or subnormal: frac * 2^-14 / 1024
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function halfTable(): Float32Array {
  if (!HALF_TABLE) {
    HALF_TABLE = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) HALF_TABLE[i] = halfToFloat(i);
  }
  return HALF_TABLE;
}

function base64ToBytes(b64: string): Uint8Array {
  const bin = atob(b64.replace(/\s+/g, ""));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function toDataView(wire: WireArray): DataView {
  const buf = wire.buffer;
  if (buf != null) {
    if (buf instanceof DataView) return buf;
    if (ArrayBuffer.isView(buf)) return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    if (buf instanceof ArrayBuffer) return new DataView(buf);
    // ArrayBuffer from another realm (iframe) fails instanceof; duck-type it.
    const maybe = buf as { byteLength?: unknown };
    if (typeof maybe.byteLength === "number") return new DataView(buf as ArrayBuffer);
    throw new TypeError("wire array: unsupported buffer type");
  }
  if (typeof wire.b64 === "string") {
    const bytes = base64ToBytes(wire.b64);
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  throw new TypeError("wire array: neither `buffer` nor `b64` present");
}

/** True for something shaped like a wire array. */
export function isWire(x: unknown): x is WireArray {
  if (x == null || typeof x !== "object") return false;
  const w = x as Partial<WireArray>;
  return typeof w.dtype === "string" && Array.isArray(w.shape) && (w.buffer != null || typeof w.b64 === "string");
}

/** Decode a wire array: floats and quantised ints → Float32Array, other ints → Int32Array. */
export function decode(wire: WireArray): Decoded {
  const dtype = wire.dtype;
  const size = ITEM_SIZE[dtype];
  if (size === undefined) throw new TypeError(`wire array: unknown dtype ${JSON.stringify(dtype)}`);
  const shape = (wire.shape ?? []).map((d) => Number(d));
  const n = shape.reduce((a, b) => a * b, 1);
  const view = toDataView(wire);
  if (view.byteLength !== n * size) {
    throw new RangeError(
      `wire array: ${dtype}${JSON.stringify(shape)} needs ${n * size} bytes, got ${view.byteLength}`,
    );
  }
  const quantised = typeof wire.scale === "number" && (dtype === "uint8" || dtype === "uint16");

  if (dtype === "float32") {
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = view.getFloat32(i * 4, true);
    return { shape, data };
  }
  if (dtype === "float16") {
    const table = halfTable();
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = table[view.getUint16(i * 2, true)];
    return { shape, data };
  }
  const read =
    dtype === "int32"
      ? (i: number) => view.getInt32(i * 4, true)
      : dtype === "int16"
        ? (i: number) => view.getInt16(i * 2, true)
        : dtype === "uint16"
          ? (i: number) => view.getUint16(i * 2, true)
          : (i: number) => view.getUint8(i);
  if (quantised) {
    const scale = wire.scale as number;
    const offset = typeof wire.offset === "number" ? wire.offset : 0;
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = offset + scale * read(i);
    return { shape, data };
  }
  const data = new Int32Array(n);
  for (let i = 0; i < n; i++) data[i] = read(i);
  return { shape, data };
}

/**
 * Decode a model trait that should hold a wire array: null when it does not (not set yet), and
 * null plus `onError("<name>: <why>")` when it cannot be decoded.
 */
export function decodeTrait(raw: unknown, name: string, onError: (message: string) => void): Decoded | null {
  if (!isWire(raw)) return null;
  try {
    return decode(raw);
  } catch (e) {
    onError(`${name}: ${e instanceof Error ? e.message : String(e)}`);
    return null;
  }
}
