import { afterEach, describe, expect, it, vi } from "vitest";
import type { AnyModel, Callback } from "../src/lib/model";
import { request, RequestError, uuid } from "../src/lib/rpc";

/** A model whose kernel side is the test: records sends, lets the test deliver msg:custom. */
function fakeModel() {
  const listeners = new Map<string, Set<Callback>>();
  const sent: Record<string, unknown>[] = [];
  const model: AnyModel = {
    get: () => undefined,
    set: () => {},
    save_changes: () => {},
    on(ev, cb) {
      if (!listeners.has(ev)) listeners.set(ev, new Set());
      listeners.get(ev)!.add(cb);
    },
    off(ev, cb) {
      if (ev && cb) listeners.get(ev)?.delete(cb);
    },
    send(content) {
      sent.push(content as Record<string, unknown>);
    },
  };
  const deliver = (msg: unknown, buffers: DataView[] = []) => {
    for (const cb of Array.from(listeners.get("msg:custom") ?? [])) cb(msg, buffers);
  };
  const count = () => listeners.get("msg:custom")?.size ?? 0;
  return { model, sent, deliver, count };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("request", () => {
  it("sends an mw-request with a fresh id, name and msg", () => {
    const { model, sent } = fakeModel();
    void request(model, "fetch", { site: "mlp_post", layer: 3 }).catch(() => {});
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ kind: "mw-request", name: "fetch", msg: { site: "mlp_post", layer: 3 } });
    expect(typeof sent[0].id).toBe("string");
    void request(model, "fetch", {}).catch(() => {});
    expect(sent[1].id).not.toBe(sent[0].id);
  });

  it("resolves on the response with the matching id only, with its buffers", async () => {
    const { model, sent, deliver, count } = fakeModel();
    const p = request(model, "fetch", {});
    const id = sent[0].id;
    let settled = false;
    void p.then(() => (settled = true));
    deliver({ kind: "mw-response", id: "someone-else", ok: true, response: { wrong: true } });
    deliver({ kind: "other", id, ok: true });
    deliver(null);
    await Promise.resolve();
    expect(settled).toBe(false);
    const buf = new DataView(new ArrayBuffer(4));
    deliver({ kind: "mw-response", id, ok: true, response: { right: true } }, [buf]);
    const r = await p;
    expect(r.response).toEqual({ right: true });
    expect(r.buffers).toEqual([buf]);
    expect(count()).toBe(0);
  });

  it("calls onProgress for its own progress messages", async () => {
    const { model, sent, deliver } = fakeModel();
    const progress: [number, number][] = [];
    const p = request(model, "fetch", {}, { onProgress: (d, t) => progress.push([d, t]) });
    const id = sent[0].id;
    deliver({ kind: "mw-progress", id, done: 1, total: 4 });
    deliver({ kind: "mw-progress", id: "other", done: 9, total: 9 });
    deliver({ kind: "mw-progress", id, done: 3, total: 4 });
    deliver({ kind: "mw-response", id, ok: true, response: {} });
    await p;
    expect(progress).toEqual([
      [1, 4],
      [3, 4],
    ]);
  });

  it("rejects with the error message on ok: false and removes its listener", async () => {
    const { model, sent, deliver, count } = fakeModel();
    const p = request(model, "fetch", {});
    expect(count()).toBe(1);
    deliver({ kind: "mw-response", id: sent[0].id, ok: false, error: "CUDA out of memory" });
    await expect(p).rejects.toThrow("CUDA out of memory");
    await expect(p).rejects.toBeInstanceOf(RequestError);
    expect(count()).toBe(0);
  });

  it("times out (default 120 s) and removes its listener", async () => {
    vi.useFakeTimers();
    const { model, count } = fakeModel();
    const p = request(model, "fetch", {});
    const check = expect(p).rejects.toThrow(/timed out/);
    vi.advanceTimersByTime(119_999);
    expect(count()).toBe(1);
    vi.advanceTimersByTime(1);
    await check;
    expect(count()).toBe(0);
  });

  it("honours a custom timeout and ignores a late response", async () => {
    vi.useFakeTimers();
    const { model, sent, deliver, count } = fakeModel();
    const p = request(model, "fetch", {}, { timeoutMs: 50 });
    const check = expect(p).rejects.toThrow(/timed out/);
    vi.advanceTimersByTime(50);
    await check;
    deliver({ kind: "mw-response", id: sent[0].id, ok: true, response: {} });
    expect(count()).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("clears its timer when it resolves", async () => {
    vi.useFakeTimers();
    const { model, sent, deliver } = fakeModel();
    const p = request(model, "fetch", {});
    deliver({ kind: "mw-response", id: sent[0].id, ok: true, response: 1 });
    await p;
    expect(vi.getTimerCount()).toBe(0);
  });

  it("aborts via signal and removes its listener", async () => {
    const { model, count } = fakeModel();
    const ctrl = new AbortController();
    const p = request(model, "fetch", {}, { signal: ctrl.signal });
    expect(count()).toBe(1);
    ctrl.abort();
    await expect(p).rejects.toMatchObject({ name: "AbortError" });
    expect(count()).toBe(0);
  });

  it("rejects at once for an already-aborted signal without sending", async () => {
    const { model, sent, count } = fakeModel();
    const ctrl = new AbortController();
    ctrl.abort();
    await expect(request(model, "fetch", {}, { signal: ctrl.signal })).rejects.toBeTruthy();
    expect(sent).toHaveLength(0);
    expect(count()).toBe(0);
  });

  it("rejects and cleans up when send throws", async () => {
    const { model, count } = fakeModel();
    model.send = () => {
      throw new Error("comm closed");
    };
    await expect(request(model, "fetch", {})).rejects.toThrow("comm closed");
    expect(count()).toBe(0);
  });
});

describe("uuid", () => {
  it("falls back when crypto.randomUUID is unavailable (non-secure context)", () => {
    const orig = globalThis.crypto.randomUUID;
    try {
      Object.defineProperty(globalThis.crypto, "randomUUID", { value: undefined, configurable: true });
      const a = uuid();
      expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(uuid()).not.toBe(a);
    } finally {
      Object.defineProperty(globalThis.crypto, "randomUUID", { value: orig, configurable: true });
    }
  });
});
