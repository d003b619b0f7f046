// The one way the console reaches admin: the public REST API under
// /api/v1, with the signed-in token as a bearer token. Errors keep admin's
// envelope ({"error":{code,message,field}}) so forms can put the message
// next to the field at fault.

const TOKEN_KEY = "portcullis.token";

/** The token lives in sessionStorage: it survives reloads of this tab,
 * never reaches the URL, and is gone when the tab closes. */
export const session = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (t: string) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public field: string | null,
  ) {
    super(message);
  }
}

/** Called when admin answers 401: the session has ended (token revoked). */
let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(f: () => void) {
  onUnauthorized = f;
}

export async function api<T = any>(
  method: string,
  path: string,
  body?: unknown,
  opts: { token?: string; contentType?: string; raw?: boolean } = {},
): Promise<T> {
  const token = opts.token ?? session.get();
  const headers: Record<string, string> = {};
  if (token) headers["Authorization"] = `Bearer ${token}`;
  let payload: BodyInit | undefined;
  if (body !== undefined) {
    if (opts.contentType) {
      headers["Content-Type"] = opts.contentType;
      payload = body as BodyInit;
    } else {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
  }
  let r: Response;
  try {
    r = await fetch(`/api/v1${path}`, { method, headers, body: payload });
  } catch (e) {
    throw new ApiError(0, "network", `admin cannot be reached: ${(e as Error).message}`, null);
  }
  const text = await r.text();
  if (!r.ok) {
    let code = "http_" + r.status;
    let message = text || r.statusText;
    let field: string | null = null;
    try {
      const e = JSON.parse(text).error;
      if (e) {
        code = e.code ?? code;
        message = e.message ?? message;
        field = e.field ?? null;
      }
    } catch {
      /* not JSON: keep the text */
    }
    if (r.status === 401 && !opts.token) onUnauthorized();
    throw new ApiError(r.status, code, message, field);
  }
  if (opts.raw) return text as T;
  return (text ? JSON.parse(text) : null) as T;
}

export const get = <T = any>(p: string) => api<T>("GET", p);
export const post = <T = any>(p: string, b?: unknown) => api<T>("POST", p, b ?? {});
export const patch = <T = any>(p: string, b: unknown) => api<T>("PATCH", p, b);
export const del = <T = any>(p: string) => api<T>("DELETE", p);
export const enc = encodeURIComponent;

/** The id admin gives a name (sdk/types/src/names.rs `slugify`): lowercase
 * ASCII letters and digits, runs of anything else one hyphen. */
export function slugify(name: string): string {
  let out = "";
  let hyphen = false;
  for (const c of name) {
    if (/^[A-Za-z0-9]$/.test(c)) {
      if (hyphen && out) out += "-";
      hyphen = false;
      out += c.toLowerCase();
    } else hyphen = true;
  }
  return out;
}

export interface Me {
  token_id: string;
  name: string;
  role: "admin" | "developer";
  team: string | null;
}

export function when(t: string | null | undefined): string {
  if (!t) return "never";
  const d = new Date(t);
  return d.toLocaleString();
}
