/**
 * Listener bookkeeping for a view: every DOM listener and model `change:` handler added through
 * one registry is removed by its `dispose()`, so a view's cleanup cannot forget one.
 */

import type { AnyModel, Callback } from "./model";

export interface Listeners {
  /** `target.addEventListener(type, fn, options)`, undone by `dispose()`. */
  dom<K extends keyof GlobalEventHandlersEventMap>(
    target: EventTarget,
    type: K,
    fn: (e: GlobalEventHandlersEventMap[K]) => void,
    options?: AddEventListenerOptions,
  ): void;
  /** Call `fn()` (no arguments) on `change:<name>` for each name; undone by `dispose()`. */
  listen(names: string[], fn: () => void): void;
  /** Remove every listener added so far. */
  dispose(): void;
}

export function listeners(model: AnyModel): Listeners {
  const undo: (() => void)[] = [];
  return {
    dom(target, type, fn, options) {
      const cb = fn as EventListener;
      target.addEventListener(type, cb, options);
      undo.push(() => target.removeEventListener(type, cb, options));
    },
    listen(names, fn) {
      const cb: Callback = () => fn();
      for (const name of names) {
        const event = `change:${name}`;
        model.on(event, cb);
        undo.push(() => model.off(event, cb));
      }
    },
    dispose() {
      for (const u of undo.splice(0)) u();
    },
  };
}
