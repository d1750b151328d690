// The body of every web_hook that kratos-hooks serves, at every hook point: set it as the hook's `body`
// (file://, or base64:// as `kratos-hooks kratos-config` writes it). The URL tells the service which hook
// point called; this template only picks what the service needs out of Kratos's `ctx`.
//
// It runs inside Kratos's own Jsonnet VM (go-jsonnet v0.20.0 in Kratos v1.3.1): no `import`, and only
// standard-library functions that exist there. `ctx.identity` and `ctx.session` are missing at some hook
// points (before hooks have neither; pre-persist hooks have no session), so every field is looked up
// defensively.
//
// Never forwarded: `ctx.request_cookies` (it holds the user's session and CSRF cookies) and the flow's
// `ui` (it echoes every submitted form value).
function(ctx)
  local has(obj, key) = std.isObject(obj) && std.objectHas(obj, key) && obj[key] != null;
  local get(obj, key) = if has(obj, key) then obj[key] else null;
  // Kratos passes request headers as lists in canonical MIME form, and only from an allowlist:
  // True-Client-Ip and User-Agent are on it; X-Forwarded-For and Authorization are not.
  local header(name) =
    local values = get(get(ctx, 'request_headers'), name);
    if std.isArray(values) && std.length(values) > 0 then values[0] else null;
  local identity = get(ctx, 'identity');
  local session = get(ctx, 'session');
  {
    flow: {
      id: ctx.flow.id,
      type: get(ctx.flow, 'type'),
      // The method being used (password, code, …) where Kratos already knows it.
      active: get(ctx.flow, 'active'),
      // Registration, login, verification and recovery after hooks carry what the client sent as
      // `transient_payload` (an invite code, for example). Kratos keeps it on the flow, not on ctx.
      transient_payload: get(ctx.flow, 'transient_payload'),
    },
    identity: if identity == null then null else {
      id: identity.id,
      schema_id: get(identity, 'schema_id'),
      state: get(identity, 'state'),
      traits: get(identity, 'traits'),
    },
    session: if session == null then null else {
      authenticated_at: get(session, 'authenticated_at'),
      authenticator_assurance_level: get(session, 'authenticator_assurance_level'),
      authentication_methods: [
        { method: get(m, 'method'), completed_at: get(m, 'completed_at') }
        for m in (if has(session, 'authentication_methods') then session.authentication_methods else [])
      ],
    },
    request: {
      // Set by the proxy in front of Kratos; the only client address a hook can see.
      client_ip: header('True-Client-Ip'),
      user_agent: header('User-Agent'),
      method: get(ctx, 'request_method'),
      url: get(ctx, 'request_url'),
    },
  }
