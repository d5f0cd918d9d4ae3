// Types of ssehub.js (beside this file), the browser client of ssehub.

/** Event names that end a run: the topic closes with them. */
export declare const TERMINAL_EVENTS: readonly ["done", "error", "cancelled"];
/** The agent vocabulary, which subscribe() listens to besides the handlers' own names. */
export declare const AGENT_EVENTS: readonly string[];

/** An error answer of the hub (`status`, and `code` and `message` from its JSON body), or `unreachable` (status 0). */
export declare class SSEHubError extends Error {
  constructor(status: number, code: string, message: string);
  readonly name: "SSEHubError";
  status: number;
  code: string;
}

/** The error of a request that got no answer: code `unreachable`, a message meant for people. */
export declare function unreachable(cause?: unknown): SSEHubError;

/** One event as handlers get it: `data` parsed from JSON (the text itself when it is not JSON). */
export interface HubEvent<T = unknown> {
  id: number | null;
  event: string;
  data: T;
  raw: string;
}

/**
 * A token for a hub with access control: the token itself, or a function that returns one, called again
 * with the token the hub refused (or said had expired) when it needs a fresh one.
 */
export type TokenSource = string | ((refused: string | null) => string | Promise<string>);

export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** A handler per event name, called as (data, event); plus onEvent and onState. */
export interface Handlers {
  onEvent?: (event: HubEvent) => void;
  onState?: (state: ConnectionState) => void;
  [event: string]: ((data: any, event: HubEvent) => void) | ((state: ConnectionState) => void) | undefined;
}

export interface SubscribeOptions {
  /** Start after this id; otherwise the id kept in sessionStorage, otherwise live events only. */
  after?: number;
  /** false: keep no id in sessionStorage. */
  resume?: boolean;
  storage?: Pick<Storage, "getItem" | "setItem"> | null;
  /** The storage key of the last id (default: storageKey(url)). */
  key?: string;
  /** Event names that end the subscription (default TERMINAL_EVENTS). */
  terminal?: readonly string[];
  /** Event names to listen to besides the handlers' and the agent vocabulary. */
  events?: readonly string[];
  /** Sent as `?token=` by subscribe() (EventSource cannot set headers), as a bearer token by stream(). */
  token?: TokenSource;
  withCredentials?: boolean;
  credentials?: RequestCredentials;
}

export interface Subscription {
  close(): void;
  readonly lastEventId: number | null;
  readonly state: ConnectionState | null;
}

export interface StreamHandlers extends Handlers {
  /** `runToken` (X-Run-Token) may read and cancel this run and nothing else: pass it to cancel(). */
  onStart?: (start: {
    runId: string | null;
    eventsUrl: string | null;
    runToken: string | null;
    response: Response;
  }) => void;
}

export interface StreamOptions extends SubscribeOptions {
  /** Where to resume the run's events (default: the answer's Location + "/events"). */
  eventsUrl?: string;
  headers?: Record<string, string>;
}

export interface RunStream {
  abort(): void;
  /** The terminal event, or null when the stream ended without one; rejects with an SSEHubError. */
  done: Promise<HubEvent | null>;
  readonly state: ConnectionState | null;
}

export interface CancelOptions {
  /** Where the hub is mounted ("" for the same origin's root). */
  base?: string;
  headers?: Record<string, string>;
  credentials?: RequestCredentials;
  /** The run's token (onStart's runToken), or any token that may cancel it. */
  token?: TokenSource;
}

/** Subscribe to a topic's (or run's) events with EventSource, resuming from the last id read. */
export declare function subscribe(url: string, handlers?: Handlers, options?: SubscribeOptions): Subscription;

/** POST `body` and read the answer as it streams, resuming through the run's events URL if it drops. */
export declare function stream(
  url: string,
  body: unknown,
  handlers?: StreamHandlers,
  options?: StreamOptions,
): RunStream;

/** Cancel a run; resolves with {id, status}. */
export declare function cancel(runId: string, options?: CancelOptions): Promise<{ id: string; status: string }>;

/** The sessionStorage key under which the last id read from `url` is kept. */
export declare function storageKey(url: string): string;

/** The hub's /healthz for one of its URLs (where it is mounted is what comes before /topics/ or /runs/). */
export declare function healthUrl(url: string): string;

/** An incremental text/event-stream parser (the WHATWG rules). */
export declare class SSEParser {
  lastEventId: string;
  retry: number | null;
  push(text: string): { id: string; event: string; data: string }[];
}
