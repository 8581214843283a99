package dispatcher

// PermanentError marks a message that can never be processed, however often it
// is redelivered (undecodable, of an unknown type). The message is dead-lettered
// with the reason and terminated instead of retried.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }

func (e *PermanentError) Unwrap() error { return e.Err }

func permanent(err error) error { return &PermanentError{Err: err} }
