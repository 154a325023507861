/** The slice of anywidget's model API that the views use (also implemented by staticModel). */

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Callback = (...args: any[]) => void;

export interface AnyModel {
  get(name: string): unknown;
  set(name: string, value: unknown): void;
  on(event: string, callback: Callback): void;
  off(event?: string | null, callback?: Callback | null): void;
  save_changes(): void;
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
}

export interface RenderProps {
  model: AnyModel;
  el: HTMLElement;
  experimental?: unknown;
}

export type Cleanup = () => void;
