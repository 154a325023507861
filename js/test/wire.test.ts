import { describe, expect, it } from "vitest";
import { decode, halfToFloat } from "../src/lib/wire";
import { wireB64, wireDV } from "./helpers";

const half = (...bits: number[]) => new Uint16Array(bits);

describe("float16", () => {
  it("decodes known bit patterns", () => {
    expect(halfToFloat(0x3c00)).toBe(1);
    expect(halfToFloat(0xc000)).toBe(-2);
    expect(halfToFloat(0x7bff)).toBe(65504);
    expect(halfToFloat(0x0001)).toBe(2 ** -24); // smallest subnormal ≈ 5.96e-8
    expect(halfToFloat(0x03ff)).toBe(1023 * 2 ** -24); // largest subnormal
    expect(halfToFloat(0x0400)).toBe(2 ** -14); // smallest normal
    expect(halfToFloat(0x3555)).toBeCloseTo(0.333251953125, 12);
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(halfToFloat(0xfc00)).toBe(-Infinity);
    expect(halfToFloat(0x7e00)).toBeNaN();
    expect(halfToFloat(0x7c01)).toBeNaN();
    expect(Object.is(halfToFloat(0x8000), -0)).toBe(true);
    expect(halfToFloat(0x0000)).toBe(0);
  });

  it("decode() widens float16 to Float32Array", () => {
    const bits = half(0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00, 0xfc00, 0x7e00, 0x8001);
    const { shape, data } = decode(wireDV("float16", [2, 4], bits));
    expect(shape).toEqual([2, 4]);
    expect(data).toBeInstanceOf(Float32Array);
    expect(Array.from(data.slice(0, 6))).toEqual([1, -2, 65504, Math.fround(2 ** -24), Infinity, -Infinity]);
    expect(data[6]).toBeNaN();
    expect(data[7]).toBe(Math.fround(-(2 ** -24)));
  });

  it("reads little-endian regardless of buffer alignment", () => {
    // 0x3c00 (1.0) little-endian is [0x00, 0x3c]; put it at an odd byte offset
    const raw = new Uint8Array([0xff, 0x00, 0x3c, 0x00, 0xc0]);
    const { data } = decode({ dtype: "float16", shape: [2], buffer: new DataView(raw.buffer, 1, 4) });
    expect(Array.from(data)).toEqual([1, -2]);
  });
});

describe("decode", () => {
  it("float32 from a DataView and from b64 agree", () => {
    const xs = new Float32Array([0.5, -1.25, 3e-8, 1e30]);
    const a = decode(wireDV("float32", [4], xs));
    const b = decode(wireB64("float32", [4], xs));
    expect(a.data).toBeInstanceOf(Float32Array);
    expect(Array.from(a.data)).toEqual(Array.from(xs));
    expect(Array.from(b.data)).toEqual(Array.from(xs));
  });

  it("accepts ArrayBuffer and Uint8Array buffers", () => {
    const xs = new Float32Array([1, 2, 3]);
    expect(Array.from(decode({ dtype: "float32", shape: [3], buffer: xs.buffer }).data)).toEqual([1, 2, 3]);
    expect(Array.from(decode({ dtype: "float32", shape: [3], buffer: new Uint8Array(xs.buffer) }).data)).toEqual([1, 2, 3]);
  });

  it("int32 → Int32Array with negatives and extremes", () => {
    const xs = new Int32Array([0, -1, 2147483647, -2147483648, 17, 3]);
    const { shape, data } = decode(wireDV("int32", [2, 3], xs));
    expect(shape).toEqual([2, 3]);
    expect(data).toBeInstanceOf(Int32Array);
    expect(Array.from(data)).toEqual([0, -1, 2147483647, -2147483648, 17, 3]);
  });

  it("int16 / uint16 / uint8 (unquantised) → Int32Array", () => {
    expect(Array.from(decode(wireB64("int16", [3], new Int16Array([-32768, -1, 32767]))).data)).toEqual([-32768, -1, 32767]);
    const u16 = decode(wireB64("uint16", [2], new Uint16Array([0, 65535])));
    expect(u16.data).toBeInstanceOf(Int32Array);
    expect(Array.from(u16.data)).toEqual([0, 65535]);
    expect(Array.from(decode(wireB64("uint8", [2], new Uint8Array([0, 255]))).data)).toEqual([0, 255]);
  });

  it("de-quantises uint8 and uint16 with scale/offset to Float32Array", () => {
    const q8 = decode({ ...wireB64("uint8", [4], new Uint8Array([0, 1, 128, 255])), scale: 0.5, offset: -10 });
    expect(q8.data).toBeInstanceOf(Float32Array);
    expect(Array.from(q8.data)).toEqual([-10, -9.5, 54, 117.5]);
    const q16 = decode({ ...wireDV("uint16", [3], new Uint16Array([0, 1000, 65535])), scale: 0.001, offset: 1 });
    expect(q16.data).toBeInstanceOf(Float32Array);
    expect(q16.data[0]).toBeCloseTo(1, 6);
    expect(q16.data[1]).toBeCloseTo(2, 6);
    expect(q16.data[2]).toBeCloseTo(66.535, 4);
  });

  it("matches Python's quantize() output: lo + scale * q", () => {
    // numpy: quantize([-1, 0, 3]) → lo=-1, scale=4/255, q=[0, 64, 255]
    const w = { ...wireB64("uint8", [3], new Uint8Array([0, 64, 255])), scale: 4 / 255, offset: -1 };
    const d = decode(w).data;
    expect(d[0]).toBeCloseTo(-1, 6);
    expect(d[1]).toBeCloseTo(-1 + (64 * 4) / 255, 6);
    expect(d[2]).toBeCloseTo(3, 6);
  });

  it("rejects a buffer whose size does not match the shape", () => {
    expect(() => decode(wireB64("float32", [3], new Float32Array([1, 2])))).toThrow(/12 bytes/);
  });

  it("rejects unknown dtypes and missing data", () => {
    expect(() => decode({ dtype: "float64" as never, shape: [1], b64: "" })).toThrow(/dtype/);
    expect(() => decode({ dtype: "float32", shape: [1] })).toThrow(/buffer/);
  });
});
