/**
 * A model over a plain object, for the self-contained HTML export (docs/widget_protocol.md,
 * "Static mode"). Same surface as anywidget's model: get/set/on/off/save_changes/send.
 * `set(name, v)` fires `change:<name>` listeners (as `(model, value)`) and then `change`.
 * `send` is a no-op: there is no kernel. `static` defaults to true.
 */

import type { AnyModel, Callback } from "./model";

export interface StaticModel extends AnyModel {
  /** The current state (for debugging / export round trips). */
  readonly state: Record<string, unknown>;
}

export function staticModel(initial: Record<string, unknown> = {}): StaticModel {
  const state: Record<string, unknown> = { ...initial };
  if (!("static" in state)) state.static = true;
  const listeners = new Map<string, Set<Callback>>();

  const emit = (event: string, ...args: unknown[]) => {
    const set = listeners.get(event);
    if (!set) return;
    for (const cb of Array.from(set)) {
      try {
        cb(...args);
      } catch (e) {
        console.error(`mi_widgets: ${event} listener threw`, e);
      }
    }
  };

  const model: StaticModel = {
    state,
    get(name) {
      return state[name];
    },
    set(name, value) {
      const old = state[name];
      state[name] = value;
      if (Object.is(old, value)) return;
      emit(`change:${name}`, model, value);
      emit("change", model);
    },
    on(event, callback) {
      for (const ev of event.split(/\s+/).filter(Boolean)) {
        let set = listeners.get(ev);
        if (!set) listeners.set(ev, (set = new Set()));
        set.add(callback);
      }
    },
    off(event, callback) {
      const events = event ? event.split(/\s+/).filter(Boolean) : Array.from(listeners.keys());
      for (const ev of events) {
        if (callback) listeners.get(ev)?.delete(callback);
        else listeners.delete(ev);
      }
    },
    save_changes() {},
    send() {},
  };
  return model;
}
