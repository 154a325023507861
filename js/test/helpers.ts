import { afterEach, expect } from "vitest";
import type { AnyModel, Callback, Cleanup, RenderProps } from "../src/lib/model";
import { staticModel } from "../src/lib/static_model";
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

// ------------------------------------------------------------------ mounting views

export interface Mounted {
  /** The container handed to `render` (attached to document.body). */
  el: HTMLElement;
  /** The view's root element, found by `rootSelector`. */
  root: HTMLElement;
  /** Run the view's cleanup now (idempotent; afterEach runs it otherwise). */
  cleanup: Cleanup;
}

const mounted: { cleanup: Cleanup; el: HTMLElement }[] = [];

// Registered on import: every test file that mounts a view gets its views cleaned up, its
// containers removed, and the XSS canary reset after each test.
afterEach(() => {
  for (const m of mounted.splice(0)) {
    m.cleanup();
    m.el.remove();
  }
  delete (window as unknown as Record<string, unknown>).__pwned;
});

/** Render a view into a fresh container in document.body; cleaned up after the test. */
export function mountView(render: (props: RenderProps) => Cleanup, model: AnyModel, rootSelector: string): Mounted {
  const el = document.createElement("div");
  document.body.appendChild(el);
  const dispose = render({ model, el });
  let done = false;
  const cleanup = () => {
    if (done) return;
    done = true;
    dispose();
  };
  mounted.push({ cleanup, el });
  return { el, root: el.querySelector<HTMLElement>(rootSelector)!, cleanup };
}

export const click = (el: Element) => el.dispatchEvent(new MouseEvent("click", { bubbles: true }));
export const hover = (el: Element) => el.dispatchEvent(new MouseEvent("mouseover", { bubbles: true }));
export const flush = () => new Promise((r) => setTimeout(r, 0));
/** No markup from the data became elements (`injected`) and none of its scripts ran. */
export function expectInert(root: ParentNode, injected = "script, img"): void {
  expect(root.querySelector(injected)).toBeNull();
  expect((window as unknown as Record<string, unknown>).__pwned).toBeUndefined();
}

export const texts = (root: ParentNode, sel: string) => Array.from(root.querySelectorAll(sel)).map((e) => e.textContent);

/**
 * A live-kernel model: `send()` goes to the test (`sent`), which plays Python by calling
 * `reply(msg, buffers)`; `listeners` are the view's `msg:custom` handlers; `saves()` counts
 * `save_changes()` calls.
 */
export function liveModel(state: Record<string, unknown>) {
  const m = staticModel({ ...state, static: false });
  const listeners = new Set<Callback>();
  const sent: Record<string, unknown>[] = [];
  let saves = 0;
  const on = m.on.bind(m);
  const off = m.off.bind(m);
  m.on = (ev, cb) => (ev === "msg:custom" ? void listeners.add(cb) : on(ev, cb));
  m.off = (ev, cb) => (ev === "msg:custom" && cb ? void listeners.delete(cb) : off(ev, cb));
  m.send = (content) => void sent.push(content as Record<string, unknown>);
  m.save_changes = () => void saves++;
  const reply = (msg: Record<string, unknown>, buffers: DataView[] = []) => {
    for (const cb of Array.from(listeners)) cb(msg, buffers);
  };
  return { model: m, sent, reply, listeners, saves: () => saves };
}
