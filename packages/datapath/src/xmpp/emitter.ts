/** A small typed event emitter: listeners run synchronously; one that throws is reported, not rethrown. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type EventMap<E> = { [K in keyof E]: (...args: any[]) => void };

export class TypedEmitter<E extends EventMap<E>> {
  readonly #listeners = new Map<keyof E, Set<E[keyof E]>>();

  constructor(private readonly onListenerError: (event: string, err: unknown) => void = () => undefined) {}

  on<K extends keyof E>(event: K, listener: E[K]): this {
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(listener);
    return this;
  }

  off<K extends keyof E>(event: K, listener: E[K]): this {
    this.#listeners.get(event)?.delete(listener);
    return this;
  }

  protected emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as (...a: Parameters<E[K]>) => void)(...args);
      } catch (err) {
        this.onListenerError(String(event), err);
      }
    }
  }
}
