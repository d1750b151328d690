// The default profile mapping: turns a Kratos identity into the searchable fields of its profile row and
// search document. Replace it with PROFILE_MAPPING_FILE to fit your own identity schemas.
//
// Input, as the top-level argument `identity`: the identity as the Kratos admin API returns it, without
// credentials and metadata_admin: {id, schema_id, state, traits, verifiable_addresses, recovery_addresses,
// metadata_public, created_at, updated_at}.
//
// Output: an object with any of these keys (a missing, null or blank key means "none"; the service trims
// every string and lower-cases the e-mail address, so the mapping need not):
//   email          string   the person's primary e-mail address
//   phone          string   the person's phone number, as in the traits (E.164 is what Kratos enforces)
//   name           string   a display name
//   locale         string   a BCP 47 language tag
//   attributes     object   any other field to store and index as a keyword (values: strings, numbers,
//                           booleans, or lists of those)
// Whether the e-mail address and phone are verified is read from Kratos's verifiable addresses by the
// service itself, not by the mapping.
function(identity)
  local traits = if std.isObject(identity.traits) then identity.traits else {};
  // Cheap on purpose: std functions written in Jsonnet (asciiLower, stripChars) cost more than everything
  // else a mapping does, so trimming and lower-casing happen in the service.
  local str(v) = if std.isString(v) && v != '' then v else null;
  local first(values) =
    local found = [v for v in values if v != null];
    if std.length(found) > 0 then found[0] else null;
  local field(obj, key) = if std.isObject(obj) && std.objectHas(obj, key) then obj[key] else null;
  local at(list, i) = if std.isArray(list) && std.length(list) > i then list[i] else null;
  local join(parts) =
    local present = [p for p in parts if p != null];
    if std.length(present) > 0 then std.join(' ', present) else null;

  local name = field(traits, 'name');
  local email = first([
    str(field(traits, 'email')),
    str(field(traits, 'email_address')),
    str(at(field(traits, 'emails'), 0)),
  ]);
  {
    email: email,
    phone: first([
      str(field(traits, 'phone')),
      str(field(traits, 'phone_number')),
      str(field(traits, 'mobile')),
    ]),
    name: first([
      str(name),
      join([str(field(name, 'first')), str(field(name, 'last'))]),
      join([str(field(name, 'given')), str(field(name, 'family'))]),
      join([str(field(traits, 'given_name')), str(field(traits, 'family_name'))]),
      join([str(field(traits, 'first_name')), str(field(traits, 'last_name'))]),
      str(field(traits, 'username')),
    ]),
    locale: first([str(field(traits, 'locale')), str(field(traits, 'language'))]),
    attributes: {
      [key]: traits[key]
      for key in ['username', 'company', 'department', 'country']
      if std.objectHas(traits, key) && (std.isString(traits[key]) || std.isNumber(traits[key]) || std.isBoolean(traits[key]))
    },
  }
