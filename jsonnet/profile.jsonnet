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
  // Cheap on purpose, as every identity goes through it. Calls are what cost in Jsonnet, so this mapping makes
  // few: fields are read by merging the traits over defaults of null (one native merge, where std.objectHas
  // or std.get would be a Jsonnet function call per field), and it has no comprehensions (each is a
  // std.flatMap call with a closure per element). Trimming and lower-casing happen in the service:
  // std.asciiLower and std.stripChars are written in Jsonnet and cost more than the rest of a mapping.
  local traits = {
    email: null, email_address: null, emails: null, phone: null, phone_number: null, mobile: null,
    name: null, given_name: null, family_name: null, first_name: null, last_name: null, username: null,
    locale: null, language: null, company: null, department: null, country: null,
  } + (if std.isObject(identity.traits) then identity.traits else {});
  local name = { first: null, last: null, given: null, family: null } + (if std.isObject(traits.name) then traits.name else {});
  // A non-empty string, or null.
  local str(v) = if std.isString(v) && v != '' then v else null;
  // The two parts that are not null, joined with a space; null when both are.
  local join(a, b) = if a == null then b else if b == null then a else a + ' ' + b;
  local scalar(v) = std.isString(v) || std.isNumber(v) || std.isBoolean(v);
  local firstEmail = if std.isArray(traits.emails) && std.length(traits.emails) > 0 then traits.emails[0] else null;

  local email = str(traits.email);
  local emailAddress = str(traits.email_address);
  local phone = str(traits.phone);
  local phoneNumber = str(traits.phone_number);
  local locale = str(traits.locale);
  local nameString = str(traits.name);
  local firstLast = join(str(name.first), str(name.last));
  local givenFamily = join(str(name.given), str(name.family));
  local givenFamilyName = join(str(traits.given_name), str(traits.family_name));
  local firstLastName = join(str(traits.first_name), str(traits.last_name));
  {
    email: if email != null then email else if emailAddress != null then emailAddress else str(firstEmail),
    phone: if phone != null then phone else if phoneNumber != null then phoneNumber else str(traits.mobile),
    name:
      if nameString != null then nameString
      else if firstLast != null then firstLast
      else if givenFamily != null then givenFamily
      else if givenFamilyName != null then givenFamilyName
      else if firstLastName != null then firstLastName
      else str(traits.username),
    locale: if locale != null then locale else str(traits.language),
    // A field whose name is null is left out: only the attributes the identity has.
    attributes: {
      [if scalar(traits.username) then 'username']: traits.username,
      [if scalar(traits.company) then 'company']: traits.company,
      [if scalar(traits.department) then 'department']: traits.department,
      [if scalar(traits.country) then 'country']: traits.country,
    },
  }
