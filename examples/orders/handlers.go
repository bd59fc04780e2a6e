package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/baton-run/baton/child"
	"github.com/gin-gonic/gin"
)

const maxBody = 64 << 10

// postOrder validates an order and queues it for the batch writer. The
// 202 means "will be written": with the journal, the order is on disk
// already and survives a kill; without it, the writer inserts it before
// this process exits.
func postOrder(w *child.BatchWriter[order]) gin.HandlerFunc {
	return func(c *gin.Context) {
		o, err := decodeOrder(http.MaxBytesReader(c.Writer, c.Request.Body, maxBody))
		if err != nil {
			c.JSON(http.StatusBadRequest, gin.H{"error": err.Error()})
			return
		}
		switch err := w.Enqueue(c.Request.Context(), o); {
		case errors.Is(err, child.ErrClosed):
			c.JSON(http.StatusServiceUnavailable, gin.H{"error": "shutting down, retry on a new connection"})
			return
		case errors.Is(err, child.ErrJournal):
			// A full disk: promise nothing that could not be kept.
			c.JSON(http.StatusServiceUnavailable, gin.H{"error": "cannot record the order, retry later: " + err.Error()})
			return
		case err != nil:
			c.JSON(http.StatusServiceUnavailable, gin.H{"error": "queue full: " + err.Error()})
			return
		}
		c.JSON(http.StatusAccepted, gin.H{"id": o.ID})
	}
}

func decodeOrder(r io.Reader) (order, error) {
	var o order
	dec := json.NewDecoder(r)
	if err := dec.Decode(&o); err != nil {
		return o, fmt.Errorf("malformed JSON: %v", err)
	}
	if dec.More() {
		return o, errors.New("malformed JSON: more than one value")
	}
	switch {
	case o.ID == "":
		return o, errors.New(`"id" is required`)
	case o.Item == "":
		return o, errors.New(`"item" is required`)
	case o.Qty < 1:
		return o, errors.New(`"qty" must be at least 1`)
	}
	return o, nil
}
