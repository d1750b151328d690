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
  // Every identity goes through this mapping, so it is written for go-jsonnet's speed: it calls builtins
  // only (std.objectHasEx, std.type, std.length, which are Go) and no function written in Jsonnet, as a
  // Jsonnet call costs more than the rest of a field. Those include `in`, std.objectHas, std.get, std.isString,
  // comprehensions and helpers defined here; hence each field spelled out: present, a string, not empty.
  // Trimming and lower-casing happen in the service: std.asciiLower and std.stripChars are Jsonnet too.
  local t = if std.type(identity.traits) == 'object' then identity.traits else {};
  local n = if std.objectHasEx(t, 'name', true) && std.type(t.name) == 'object' then t.name else {};
  {
    email:
      if std.objectHasEx(t, 'email', true) && std.type(t.email) == 'string' && t.email != '' then t.email
      else if std.objectHasEx(t, 'email_address', true)
              && std.type(t.email_address) == 'string' && t.email_address != ''
      then t.email_address
      else if std.objectHasEx(t, 'emails', true) && std.type(t.emails) == 'array' && std.length(t.emails) > 0
              && std.type(t.emails[0]) == 'string' && t.emails[0] != ''
      then t.emails[0]
      else null,
    phone:
      if std.objectHasEx(t, 'phone', true) && std.type(t.phone) == 'string' && t.phone != '' then t.phone
      else if std.objectHasEx(t, 'phone_number', true) && std.type(t.phone_number) == 'string' && t.phone_number != ''
      then t.phone_number
      else if std.objectHasEx(t, 'mobile', true) && std.type(t.mobile) == 'string' && t.mobile != '' then t.mobile
      else null,
    // The first of: name as a string; name.first and name.last; name.given and name.family; given_name and
    // family_name; first_name and last_name (either of a pair, or both joined with a space); username.
    name:
      if std.objectHasEx(t, 'name', true) && std.type(t.name) == 'string' && t.name != '' then t.name
      else if std.objectHasEx(n, 'first', true) && std.type(n.first) == 'string' && n.first != '' then (
        if std.objectHasEx(n, 'last', true) && std.type(n.last) == 'string' && n.last != '' then n.first + ' ' + n.last
        else n.first
      )
      else if std.objectHasEx(n, 'last', true) && std.type(n.last) == 'string' && n.last != '' then n.last
      else if std.objectHasEx(n, 'given', true) && std.type(n.given) == 'string' && n.given != '' then (
        if std.objectHasEx(n, 'family', true) && std.type(n.family) == 'string' && n.family != ''
        then n.given + ' ' + n.family
        else n.given
      )
      else if std.objectHasEx(n, 'family', true) && std.type(n.family) == 'string' && n.family != '' then n.family
      else if std.objectHasEx(t, 'given_name', true) && std.type(t.given_name) == 'string' && t.given_name != '' then (
        if std.objectHasEx(t, 'family_name', true) && std.type(t.family_name) == 'string' && t.family_name != ''
        then t.given_name + ' ' + t.family_name
        else t.given_name
      )
      else if std.objectHasEx(t, 'family_name', true) && std.type(t.family_name) == 'string' && t.family_name != ''
      then t.family_name
      else if std.objectHasEx(t, 'first_name', true) && std.type(t.first_name) == 'string' && t.first_name != '' then (
        if std.objectHasEx(t, 'last_name', true) && std.type(t.last_name) == 'string' && t.last_name != ''
        then t.first_name + ' ' + t.last_name
        else t.first_name
      )
      else if std.objectHasEx(t, 'last_name', true) && std.type(t.last_name) == 'string' && t.last_name != ''
      then t.last_name
      else if std.objectHasEx(t, 'username', true) && std.type(t.username) == 'string' && t.username != ''
      then t.username
      else null,
    locale:
      if std.objectHasEx(t, 'locale', true) && std.type(t.locale) == 'string' && t.locale != '' then t.locale
      else if std.objectHasEx(t, 'language', true) && std.type(t.language) == 'string' && t.language != ''
      then t.language
      else null,
    // A field whose name is null is left out: only the attributes the identity has, when they are scalars.
    attributes: {
      [if std.objectHasEx(t, 'username', true)
          && (local type = std.type(t.username); type == 'string' || type == 'number' || type == 'boolean')
       then 'username']: t.username,
      [if std.objectHasEx(t, 'company', true)
          && (local type = std.type(t.company); type == 'string' || type == 'number' || type == 'boolean')
       then 'company']: t.company,
      [if std.objectHasEx(t, 'department', true)
          && (local type = std.type(t.department); type == 'string' || type == 'number' || type == 'boolean')
       then 'department']: t.department,
      [if std.objectHasEx(t, 'country', true)
          && (local type = std.type(t.country); type == 'string' || type == 'number' || type == 'boolean')
       then 'country']: t.country,
    },
  }
