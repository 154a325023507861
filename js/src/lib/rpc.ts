/**
 * Browser → Python requests over the widget's custom messages (docs/widget_protocol.md, "Requests"):
 *   browser: {kind: "mw-request", id, name, msg}
 *   python : {kind: "mw-progress", id, done, total}            (0..n times)
 *   python : {kind: "mw-response", id, ok: true, response}     (+ buffers)
 *   python : {kind: "mw-response", id, ok: false, error}
 */

import type { AnyModel } from "./model";

export interface RequestOptions {
  /** Reject after this many ms (default 120 000). 0 or Infinity: never. */
  timeoutMs?: number;
  /** Called for every mw-progress message of this request. */
  onProgress?: (done: number, total: number) => void;
  /** Abort: rejects with an Error named "AbortError" and stops listening. */
  signal?: AbortSignal;
}

export interface Response<T = unknown> {
  response: T;
  buffers: DataView[];
}

/** The Python side answered `ok: false`; `message` is its error text. */
export class RequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RequestError";
  }
}

export const DEFAULT_TIMEOUT_MS = 120_000;

/** RFC 4122 v4 id; crypto.randomUUID is missing in non-secure contexts (plain-http Jupyter). */
export function uuid(): string {
  const c = (globalThis as { crypto?: Crypto }).crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === "function") c.getRandomValues(b);
  else for (let i = 0; i < 16; i++) b[i] = (Math.random() * 256) | 0;
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  const err = new Error(typeof reason === "string" ? reason : "request aborted");
  err.name = "AbortError";
  return err;
}

interface Message {
  kind?: unknown;
  id?: unknown;
  done?: unknown;
  total?: unknown;
  ok?: unknown;
  response?: unknown;
  error?: unknown;
}

export function request<T = unknown>(
  model: AnyModel,
  name: string,
  msg: unknown = {},
  { timeoutMs = DEFAULT_TIMEOUT_MS, onProgress, signal }: RequestOptions = {},
): Promise<Response<T>> {
  return new Promise<Response<T>>((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortError(signal));
      return;
    }
    const id = uuid();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let settled = false;

    const cleanup = () => {
      settled = true;
      model.off("msg:custom", onMessage);
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const fail = (err: Error) => {
      if (settled) return;
      cleanup();
      reject(err);
    };
    const onAbort = () => fail(abortError(signal as AbortSignal));

    function onMessage(content: unknown, buffers?: unknown) {
      if (settled || content == null || typeof content !== "object") return;
      const m = content as Message;
      if (m.id !== id) return;
      if (m.kind === "mw-progress") {
        if (onProgress) {
          try {
            onProgress(Number(m.done), Number(m.total));
          } catch (e) {
            console.error("mi_widgets: onProgress threw", e);
          }
        }
        return;
      }
      if (m.kind !== "mw-response") return;
      if (m.ok === true) {
        cleanup();
        resolve({ response: m.response as T, buffers: Array.isArray(buffers) ? (buffers as DataView[]) : [] });
      } else {
        fail(new RequestError(typeof m.error === "string" && m.error ? m.error : `request "${name}" failed`));
      }
    }

    model.on("msg:custom", onMessage);
    signal?.addEventListener("abort", onAbort);
    if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
      timer = setTimeout(
        () => fail(new Error(`request "${name}" timed out after ${Math.round(timeoutMs / 1000)} s`)),
        timeoutMs,
      );
    }
    try {
      model.send({ kind: "mw-request", id, name, msg });
    } catch (e) {
      fail(e instanceof Error ? e : new Error(String(e)));
    }
  });
}
