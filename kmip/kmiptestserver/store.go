package kmiptestserver

import (
	"context"
	"crypto/rand"
	"slices"
	"strconv"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"
)

// object is one managed object in memory.
type object struct {
	typ      kmip.ObjectType
	state    kmip.State
	names    []string
	material []byte
	alg      kmip.CryptographicAlgorithm
	length   int32 // bits
	usage    kmip.CryptographicUsageMask
}

func (o *object) destroyed() bool {
	return o.state == kmip.StateDestroyed || o.state == kmip.StateDestroyedCompromised
}

// add stores o under the next identifier. s.mu must be held.
func (s *Server) add(o *object) string {
	s.nextID++
	id := strconv.Itoa(s.nextID)
	s.objects[id] = o
	return id
}

// sortedIDs returns the identifiers in creation order. s.mu must be held.
func (s *Server) sortedIDs() []string {
	ids := make([]string, 0, len(s.objects))
	for id := range s.objects {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	return ids
}

// find returns the object the request names (or the batch's ID
// placeholder). s.mu must be held. A destroyed object is found only with
// withDestroyed.
func (s *Server) find(ctx context.Context, reqID string, withDestroyed bool) (string, *object, error) {
	id, err := kmipserver.GetIdOrPlaceholder(ctx, reqID)
	if err != nil {
		return "", nil, kmipserver.Errorf(kmip.ResultReasonMissingData, "no unique identifier")
	}
	o, ok := s.objects[id]
	if !ok || (o.destroyed() && !withDestroyed) {
		return "", nil, kmipserver.Errorf(kmip.ResultReasonItemNotFound, "object %s not found", id)
	}
	return id, o, nil
}

func (s *Server) create(ctx context.Context, req *payloads.CreateRequestPayload) (*payloads.CreateResponsePayload, error) {
	if req.ObjectType != kmip.ObjectTypeSymmetricKey {
		return nil, kmipserver.Errorf(kmip.ResultReasonFeatureNotSupported, "only symmetric keys can be created, not %s", ttlv.EnumStr(req.ObjectType))
	}
	o := &object{typ: kmip.ObjectTypeSymmetricKey, state: kmip.StatePreActive}
	for _, a := range req.TemplateAttribute.Attribute {
		switch v := a.AttributeValue.(type) {
		case kmip.Name:
			o.names = append(o.names, v.NameValue)
		case kmip.CryptographicAlgorithm:
			o.alg = v
		case int32:
			if a.AttributeName == kmip.AttributeNameCryptographicLength {
				o.length = v
			}
		case kmip.CryptographicUsageMask:
			o.usage = v
		}
	}
	if o.alg != kmip.CryptographicAlgorithmAES {
		return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "cryptographic algorithm %s not supported; want AES", ttlv.EnumStr(o.alg))
	}
	if o.length != 128 && o.length != 192 && o.length != 256 {
		return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "cryptographic length %d not supported; want 128, 192 or 256", o.length)
	}
	o.material = make([]byte, o.length/8)
	if _, err := rand.Read(o.material); err != nil {
		return nil, err
	}
	s.mu.Lock()
	id := s.add(o)
	s.mu.Unlock()
	kmipserver.SetIdPlaceholder(ctx, id)
	return &payloads.CreateResponsePayload{ObjectType: o.typ, UniqueIdentifier: id}, nil
}

func (s *Server) activate(ctx context.Context, req *payloads.ActivateRequestPayload) (*payloads.ActivateResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, o, err := s.find(ctx, req.UniqueIdentifier, false)
	if err != nil {
		return nil, err
	}
	if o.state != kmip.StatePreActive {
		return nil, kmipserver.Errorf(kmip.ResultReasonIllegalOperation, "object %s is %s, not PreActive", id, ttlv.EnumStr(o.state))
	}
	o.state = kmip.StateActive
	return &payloads.ActivateResponsePayload{UniqueIdentifier: id}, nil
}

func (s *Server) get(ctx context.Context, req *payloads.GetRequestPayload) (*payloads.GetResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, o, err := s.find(ctx, req.UniqueIdentifier, false)
	if err != nil {
		return nil, err
	}
	b := slices.Clone(o.material)
	kb := kmip.KeyBlock{
		KeyFormatType: kmip.KeyFormatTypeRaw,
		KeyValue:      &kmip.KeyValue{Plain: &kmip.PlainKeyValue{KeyMaterial: kmip.KeyMaterial{Bytes: &b}}},
	}
	switch req.KeyFormatType {
	case 0, kmip.KeyFormatTypeRaw:
	case kmip.KeyFormatTypeTransparentSymmetricKey:
		kb.KeyFormatType = req.KeyFormatType
		kb.KeyValue.Plain.KeyMaterial = kmip.KeyMaterial{TransparentSymmetricKey: &kmip.TransparentSymmetricKey{Key: b}}
	default:
		return nil, kmipserver.Errorf(kmip.ResultReasonKeyFormatTypeNotSupported, "key format %s not supported", ttlv.EnumStr(req.KeyFormatType))
	}
	resp := &payloads.GetResponsePayload{ObjectType: o.typ, UniqueIdentifier: id}
	switch o.typ {
	case kmip.ObjectTypeSymmetricKey:
		kb.CryptographicAlgorithm = o.alg
		kb.CryptographicLength = o.length
		resp.Object = &kmip.SymmetricKey{KeyBlock: kb}
	case kmip.ObjectTypeSecretData:
		resp.Object = &kmip.SecretData{SecretDataType: kmip.SecretDataTypePassword, KeyBlock: kb}
	default:
		return nil, kmipserver.Errorf(kmip.ResultReasonFeatureNotSupported, "object type %s not supported", ttlv.EnumStr(o.typ))
	}
	kmipserver.SetIdPlaceholder(ctx, id)
	return resp, nil
}

// attributes returns o's attributes, those named or all.
func (o *object) attributes(id string, names []kmip.AttributeName) []kmip.Attribute {
	want := func(n kmip.AttributeName) bool { return len(names) == 0 || slices.Contains(names, n) }
	var out []kmip.Attribute
	add := func(n kmip.AttributeName, v any) {
		if want(n) {
			out = append(out, kmip.Attribute{AttributeName: n, AttributeValue: v})
		}
	}
	add(kmip.AttributeNameUniqueIdentifier, id)
	add(kmip.AttributeNameObjectType, o.typ)
	if want(kmip.AttributeNameName) {
		for i, n := range o.names {
			a := kmip.Attribute{AttributeName: kmip.AttributeNameName, AttributeValue: kmip.Name{NameValue: n, NameType: kmip.NameTypeUninterpretedTextString}}
			if i > 0 {
				idx := int32(i)
				a.AttributeIndex = &idx
			}
			out = append(out, a)
		}
	}
	if o.typ == kmip.ObjectTypeSymmetricKey {
		add(kmip.AttributeNameCryptographicAlgorithm, o.alg)
		add(kmip.AttributeNameCryptographicLength, o.length)
		add(kmip.AttributeNameCryptographicUsageMask, o.usage)
	}
	add(kmip.AttributeNameState, o.state)
	return out
}

func (s *Server) getAttributes(ctx context.Context, req *payloads.GetAttributesRequestPayload) (*payloads.GetAttributesResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, o, err := s.find(ctx, req.UniqueIdentifier, true)
	if err != nil {
		return nil, err
	}
	return &payloads.GetAttributesResponsePayload{UniqueIdentifier: id, Attribute: o.attributes(id, req.AttributeName)}, nil
}

func (s *Server) locate(_ context.Context, req *payloads.LocateRequestPayload) (*payloads.LocateResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var match []func(*object) bool
	for _, a := range req.Attribute {
		switch v := a.AttributeValue.(type) {
		case kmip.Name:
			match = append(match, func(o *object) bool { return slices.Contains(o.names, v.NameValue) })
		case kmip.ObjectType:
			match = append(match, func(o *object) bool { return o.typ == v })
		case kmip.State:
			match = append(match, func(o *object) bool { return o.state == v })
		case kmip.CryptographicAlgorithm:
			match = append(match, func(o *object) bool { return o.alg == v })
		default:
			return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "locate by %s not supported", a.AttributeName)
		}
	}
	resp := &payloads.LocateResponsePayload{}
	for _, id := range s.sortedIDs() {
		o := s.objects[id]
		ok := true
		for _, m := range match {
			ok = ok && m(o)
		}
		if !ok {
			continue
		}
		if req.MaximumItems > 0 && len(resp.UniqueIdentifier) >= int(req.MaximumItems) {
			break
		}
		resp.UniqueIdentifier = append(resp.UniqueIdentifier, id)
	}
	n := int32(len(resp.UniqueIdentifier))
	resp.LocatedItems = &n
	return resp, nil
}

func (s *Server) revoke(ctx context.Context, req *payloads.RevokeRequestPayload) (*payloads.RevokeResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, o, err := s.find(ctx, req.UniqueIdentifier, false)
	if err != nil {
		return nil, err
	}
	switch req.RevocationReason.RevocationReasonCode {
	case kmip.RevocationReasonCodeKeyCompromise, kmip.RevocationReasonCodeCACompromise:
		o.state = kmip.StateCompromised
	default:
		if o.state != kmip.StateActive {
			return nil, kmipserver.Errorf(kmip.ResultReasonIllegalOperation, "object %s is %s; only an Active object can be revoked for reason %s",
				id, ttlv.EnumStr(o.state), ttlv.EnumStr(req.RevocationReason.RevocationReasonCode))
		}
		o.state = kmip.StateDeactivated
	}
	return &payloads.RevokeResponsePayload{UniqueIdentifier: id}, nil
}

func (s *Server) destroy(ctx context.Context, req *payloads.DestroyRequestPayload) (*payloads.DestroyResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, o, err := s.find(ctx, req.UniqueIdentifier, false)
	if err != nil {
		return nil, err
	}
	if o.state == kmip.StateActive {
		return nil, kmipserver.Errorf(kmip.ResultReasonPermissionDenied, "object %s is Active and cannot be destroyed; revoke it first", id)
	}
	clear(o.material)
	if s.opts.keepDestroyed {
		o.material = nil
		if o.state == kmip.StateCompromised {
			o.state = kmip.StateDestroyedCompromised
		} else {
			o.state = kmip.StateDestroyed
		}
	} else {
		delete(s.objects, id)
	}
	return &payloads.DestroyResponsePayload{UniqueIdentifier: id}, nil
}
