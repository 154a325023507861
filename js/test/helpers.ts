import type { WireArray, WireDType } from "../src/lib/wire";

function bytesToB64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** A wire array as a live kernel hands it over: the buffer is a DataView. */
export function wireDV(dtype: WireDType, shape: number[], data: ArrayBufferView): WireArray {
  return { dtype, shape, buffer: new DataView(data.buffer, data.byteOffset, data.byteLength) };
}

/** The same array as a static export carries it: base64 text. */
export function wireB64(dtype: WireDType, shape: number[], data: ArrayBufferView): WireArray {
  return { dtype, shape, b64: bytesToB64(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)) };
}

export const f32 = (values: number[], shape = [values.length]) => wireB64("float32", shape, new Float32Array(values));
export const i32 = (values: number[], shape = [values.length]) => wireB64("int32", shape, new Int32Array(values));
