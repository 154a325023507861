/**
 * Listener bookkeeping for a view: every DOM listener and model `change:` handler added through
 * one registry is removed by its `dispose()`, so a view's cleanup cannot forget one.
 */

import type { AnyModel, Callback } from "./model";

type EventMap = GlobalEventHandlersEventMap;
/** Handlers by event type, e.g. `{ click: onClick, keydown: onKey }`. */
export type Handlers = { [K in keyof EventMap]?: (e: EventMap[K]) => void };

export interface Listeners {
  /** `target.addEventListener(type, fn, options)`, undone by `dispose()`. */
  dom<K extends keyof EventMap>(target: EventTarget, type: K, fn: (e: EventMap[K]) => void, options?: AddEventListenerOptions): void;
  /** `dom(target, type, fn)` for each `type: fn` of `handlers`. */
  on(target: EventTarget, handlers: Handlers): void;
  /** Call `fn()` (no arguments) on `change:<name>` for each name; undone by `dispose()`. */
  listen(names: string[], fn: () => void): void;
  /** Call `fn()` when the view's colours must be repainted: its `palette` trait changed, or the
   * page's theme did (a bubbling `mw-theme` event at `root`, colour.ts followHostTheme). */
  recolour(root: EventTarget, fn: () => void): void;
  /** Remove every listener added so far. */
  dispose(): void;
}

export function listeners(model: AnyModel): Listeners {
  const undo: (() => void)[] = [];
  const add = (target: EventTarget, type: string, fn: unknown, options?: AddEventListenerOptions) => {
    const cb = fn as EventListener;
    target.addEventListener(type, cb, options);
    undo.push(() => target.removeEventListener(type, cb, options));
  };
  const listen = (names: string[], fn: () => void) => {
    const cb: Callback = () => fn();
    for (const name of names) {
      const event = `change:${name}`;
      model.on(event, cb);
      undo.push(() => model.off(event, cb));
    }
  };
  return {
    dom: add,
    on(target, handlers) {
      for (const [type, fn] of Object.entries(handlers)) add(target, type, fn);
    },
    listen,
    recolour(root, fn) {
      listen(["palette"], fn);
      add(root, "mw-theme", () => fn());
    },
    dispose() {
      for (const u of undo.splice(0)) u();
    },
  };
}
