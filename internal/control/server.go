package control

import (
	"encoding/json"
	"io"
)

// FailReply is the reply that reports err.
func FailReply(err error) *Reply {
	return &Reply{V: Version, Error: err.Error()}
}

// WriteReply writes rep as one line of JSON.
func WriteReply(w io.Writer, rep *Reply) error {
	line, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	_, err = w.Write(append(line, '\n'))
	return err
}
