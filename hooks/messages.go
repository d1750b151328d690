package hooks

import (
	"fmt"
	"net/http"
)

// Message is one message Kratos shows in its form, in the shape a `response.parse: true` web_hook must
// answer with to interrupt a flow.
type Message struct {
	// ID is a stable number a UI can translate the message by.
	ID   int    `json:"id"`
	Text string `json:"text"`
	// Type "error" is shown as an error; Kratos shows anything else as "info".
	Type    string         `json:"type"`
	Context map[string]any `json:"context,omitempty"`
}

// FieldMessages are the messages for one form field.
type FieldMessages struct {
	// InstancePtr is the JSON pointer of the field, such as "#/traits/email"; "#/" puts the messages on the
	// whole form (Kratos's ui.messages).
	InstancePtr string    `json:"instance_ptr"`
	Messages    []Message `json:"messages"`
}

// MessagesError interrupts a Kratos flow: the error handler answers with Status and the messages body, and
// Kratos shows the messages under the fields they point at. Status must be a 4xx other than 429: Kratos
// retries 429 and 5xx and then throws the body away.
type MessagesError struct {
	Status int
	Fields []FieldMessages
	// Err, when set, is an internal cause behind the message (the database did not answer): logged, never
	// shown.
	Err error
}

func (e *MessagesError) Unwrap() error { return e.Err }

func (e *MessagesError) Error() string {
	if len(e.Fields) > 0 && len(e.Fields[0].Messages) > 0 {
		m := e.Fields[0].Messages[0]
		return fmt.Sprintf("flow interrupted at %s: %d %s", e.Fields[0].InstancePtr, m.ID, m.Text)
	}
	return "flow interrupted"
}

// Body is what Kratos parses.
func (e *MessagesError) Body() any {
	return struct {
		Messages []FieldMessages `json:"messages"`
	}{e.Fields}
}

// refuse builds a one-message refusal on the field at ptr.
func refuse(ptr string, msg Message) *MessagesError {
	if msg.Type == "" {
		msg.Type = "error"
	}
	return &MessagesError{Status: http.StatusForbidden, Fields: []FieldMessages{{InstancePtr: ptr, Messages: []Message{msg}}}}
}
