// The body Kratos's courier sends for an SMS over its HTTP channel (courier.channels[id=sms]). As shipped
// it posts to kratos-hooks's development SMS sink (DEV_SMS_SINK=true). For a real provider, change the URL
// and this body; for example Twilio takes form fields (set the channel's Content-Type to
// application/x-www-form-urlencoded and return a flat object):
//   function(ctx) { To: ctx.recipient, From: '+15005550006', Body: ctx.body }
//
// ctx (Kratos v1.3.1): recipient, subject, body (the rendered text), template_type (verification_code_valid,
// login_code_valid, …), template_data (the template's model: to, verification_code or login_code, identity, …),
// message_type.
function(ctx) {
  to: ctx.recipient,
  body: ctx.body,
  template: ctx.template_type,
  // The one-time code on its own, for providers that bring their own text.
  code:
    if std.objectHas(ctx.template_data, 'verification_code') then ctx.template_data.verification_code
    else if std.objectHas(ctx.template_data, 'login_code') then ctx.template_data.login_code
    else null,
}
